// Package curated is postroj's catalogue of distributions: curated.yaml,
// embedded here, parsed and validated (names, aliases, families and
// package managers as internal/distro knows them, sources, quirks). It is
// data only: internal/acquire gets an entry's image ready to boot, and
// internal/mirror builds one from a package mirror.
package curated
