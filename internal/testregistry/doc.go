// Package testregistry runs a throw-away docker-registry on loopback for
// end-to-end tests and fills it with images: real Debian root filesystems
// built once by mmdebstrap and cached outside the repository, synthetic
// layers written from a small spec language, and an oracle that compares an
// image's flattened filesystem with an unpacked root filesystem.
package testregistry
