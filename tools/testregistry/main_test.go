package main

import (
	"strings"
	"testing"
)

func TestParseSeed(t *testing.T) {
	for _, tt := range []struct {
		in, ref, suite, err string
	}{
		{in: "debian:bookworm-slim", ref: "library/debian:bookworm-slim", suite: "bookworm"},
		{in: "docker.io/library/debian:trixie-slim", ref: "library/debian:trixie-slim", suite: "trixie"},
		{in: "index.docker.io/library/debian:sid-slim", ref: "library/debian:sid-slim", suite: "sid"},
		{in: "debian:bookworm", err: "no recipe"},
		{in: "debian:-slim", err: "no recipe"},
		{in: "ubuntu:noble-slim", err: "no recipe"},
		{in: "quay.io/library/debian:bookworm-slim", err: "no recipe"},
		{in: "debian@sha256:" + strings.Repeat("0", 64), err: "-seed"},
		{in: "Debian:x", err: "-seed"},
	} {
		s, err := parseSeed(tt.in)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s: error %v, want one containing %q", tt.in, err, tt.err)
		case tt.err == "" && err != nil:
			t.Errorf("%s: %v", tt.in, err)
		case tt.err == "" && (s.ref != tt.ref || s.recipe.Suite != tt.suite || s.recipe.Variant != "minbase"):
			t.Errorf("%s: got %q %+v, want %q suite %q minbase", tt.in, s.ref, s.recipe, tt.ref, tt.suite)
		}
	}
}
