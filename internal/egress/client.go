package egress

import (
	"fmt"
	"strings"
)

// DefaultPort is where a container's proxy listens on its own 127.0.0.1.
// Each container has its own loopback, so one fixed port serves them all;
// it is an unusual one so that packages under test do not want it.
const DefaultPort = 3129

// NoProxy is what clients reach without the proxy: the container itself.
const NoProxy = "localhost,127.0.0.1,::1"

// Client is how programs in a container are pointed at the proxy.
type Client struct {
	// Env is set for services (the service manager's environment) and for
	// the commands a probe runs: http_proxy, https_proxy, no_proxy in both
	// cases, as curl, wget, apt, librepo (dnf, microdnf), yum and pacman
	// read them.
	Env []string
	// Files are configuration files for package managers that do not
	// read the environment reliably: apt (its methods run as _apt with
	// their own settings) and zypper (libzypp disables proxies that
	// /etc/sysconfig/proxy does not enable).
	Files []File
}

// File is a configuration file to place in a container.
type File struct {
	Path    string // in the container
	Content string
	// If is a directory that shows the file's package manager is there;
	// the file is only placed in images that have it.
	If string
}

// ClientConfig returns the configuration for a proxy at addr (HOST:PORT).
// Files name the directory that shows their manager is present.
func ClientConfig(addr string) Client {
	u := "http://" + addr + "/"
	env := []string{
		"http_proxy=" + u, "https_proxy=" + u, "no_proxy=" + NoProxy,
		"HTTP_PROXY=" + u, "HTTPS_PROXY=" + u, "NO_PROXY=" + NoProxy,
	}
	apt := fmt.Sprintf("// Written by postroj: the container's only way out is this proxy.\n"+
		"Acquire::http::Proxy %q;\nAcquire::https::Proxy %q;\n", u, u)
	zypp := strings.Join([]string{
		"# Written by postroj: the container's only way out is this proxy.",
		`PROXY_ENABLED="yes"`,
		fmt.Sprintf("HTTP_PROXY=%q", u),
		fmt.Sprintf("HTTPS_PROXY=%q", u),
		fmt.Sprintf("FTP_PROXY=%q", ""),
		fmt.Sprintf("NO_PROXY=%q", "localhost, 127.0.0.1, ::1"),
	}, "\n") + "\n"
	return Client{
		Env: env,
		Files: []File{
			{Path: "/etc/apt/apt.conf.d/00postroj-proxy", Content: apt, If: "/etc/apt/apt.conf.d"},
			{Path: "/etc/sysconfig/proxy", Content: zypp, If: "/etc/zypp"},
		},
	}
}
