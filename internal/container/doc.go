// Package container runs images as operating system containers: it gets a
// bootable root filesystem from the image store and drives it with nspawn.
package container
