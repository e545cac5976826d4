// Package nspawn boots root filesystems as volatile OS containers with
// systemd-nspawn, runs commands inside them, and keeps the per-container state
// that lets other processes list and stop them.
package nspawn
