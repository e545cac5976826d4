// Package distro is what racker and postroj know about Linux distributions:
// their families and package managers, the package type each manager
// installs, how to tell from a root filesystem which managers an image has
// and what it lacks for booting, the non-interactive command lines that
// prepare an image and install packages, which repositories an image's
// package managers are configured with, and which systemd releases need
// commands to enter the container with nsenter. It is knowledge only: the
// image store, nspawn, the probe engine and the catalogue ask it; it runs
// nothing.
package distro
