// Package acquire gets the catalogue's images (internal/curated) ready to
// boot: pulled from their registry or built from their package mirror
// (internal/mirror), with the registry -> mirror fallback, and prepared
// with the entry's quirks. Get is the one way postroj pull, pkgprobe and
// selftest acquire an entry; Pull and List are postroj pull and
// list-images, flags aside.
package acquire
