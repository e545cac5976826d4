// Package autopkgtest is a virtualisation server for Debian's autopkgtest
// (autopkgtest-virt-racker): it speaks autopkgtest's line protocol and
// provides testbeds that are booted racker containers on volatile overlays.
package autopkgtest
