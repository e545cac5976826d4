// Package container is the one way racker and postroj start, find and end
// containers: Runtime.Start boots a root filesystem with the given name,
// binds and isolation (StartOptions, Isolation), Open, List, Exec, Stop and
// Remove reach containers by name, and Runtime.Run is racker run: an image
// from the store, prepared for booting if needed, booted and given a
// command. Below it, nspawn drives systemd-nspawn; above it, cli and probe
// only fill in options.
package container
