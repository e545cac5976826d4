// Package racker holds what the binaries embed from the repository root:
// the curated catalogue of distributions.
package racker

import _ "embed"

// CuratedYAML is curated.yaml, the catalogue postroj works from.
//
//go:embed curated.yaml
var CuratedYAML []byte
