// Package fileio writes files so that no reader ever sees half of one, and
// digests files: what the image store, the container state, the download
// caches and the test registry share.
package fileio
