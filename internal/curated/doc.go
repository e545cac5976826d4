// Package curated is postroj's catalogue of distributions (curated.yaml at
// the repository root) and the Debian-family images it builds from a
// package mirror with mmdebstrap. container.Acquire turns an Entry into a
// bootable root filesystem.
package curated
