// Package probe tests distribution packages on booted OS containers: it
// fetches package files into a download cache, installs them with the
// image's own package manager, waits for systemd units to become active,
// checks network addresses from the host, and reports every step as text,
// JSON and JUnit XML.
package probe
