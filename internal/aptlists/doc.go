// Package aptlists keeps apt's index files (apt-get update's lists) and
// the binary caches apt builds from them, taken from a container right
// after apt-get update and before anything is installed, for the next
// container of the same image: every kept index file is checked against
// the kept Release file's SHA-256 and size, on the host, when kept and
// when put back.
package aptlists
