// Package image owns the local image store: it resolves references, pulls
// images from registries and keeps their unpacked root filesystems.
package image
