// Package nspawn boots root filesystems as volatile OS containers with
// systemd-nspawn, runs commands inside them, and keeps the per-container state
// that lets other processes list and stop them. The rest of racker and postroj
// reach it through package container, which decides names and isolation.
package nspawn
