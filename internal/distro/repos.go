package distro

import (
	"bufio"
	"bytes"
	"net/url"
	"path"
	"slices"
	"strings"

	"github.com/racker-postroj/racker/internal/rootfs"
)

// maxRepoFile bounds how much of one repository file is read.
const maxRepoFile = 1 << 20

// RepositoryURLs lists the URLs of the package repositories an image's
// package managers are configured with: apt's sources.list and
// sources.list.d (one-line and deb822 .sources), yum/dnf and zypper .repo
// files (baseurl, mirrorlist, metalink; disabled repositories skipped), and
// pacman's Server lines (pacman.conf and the files it includes). Paths
// resolve inside dir. Unreadable files are skipped: an image without
// repositories simply has none.
func RepositoryURLs(dir string) ([]string, error) {
	root, err := rootfs.Open(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var urls []string
	add := func(us ...string) {
		for _, u := range us {
			if !slices.Contains(urls, u) {
				urls = append(urls, u)
			}
		}
	}
	read := func(name string) []byte {
		b, err := root.ReadFile(name, maxRepoFile)
		if err != nil {
			return nil
		}
		return b
	}
	list := func(d, suffix string) []string {
		names, _ := root.ReadDirNames(d)
		var out []string
		for _, n := range names {
			if strings.HasSuffix(n, suffix) {
				out = append(out, path.Join(d, n))
			}
		}
		slices.Sort(out)
		return out
	}

	add(aptOneLine(read("/etc/apt/sources.list"))...)
	for _, f := range list("/etc/apt/sources.list.d", ".list") {
		add(aptOneLine(read(f))...)
	}
	for _, f := range list("/etc/apt/sources.list.d", ".sources") {
		add(aptDeb822(read(f))...)
	}
	for _, d := range []string{"/etc/yum.repos.d", "/etc/zypp/repos.d"} {
		for _, f := range list(d, ".repo") {
			add(iniRepos(read(f))...)
		}
	}
	add(pacmanServers(read, "/etc/pacman.conf", 0)...)
	add(pacmanServers(read, "/etc/pacman.d/mirrorlist", 0)...)
	return urls, nil
}

// repoURL strips apt's transport prefixes (tor+, mirror+) and keeps
// network URLs only.
func repoURL(s string) (string, bool) {
	for _, p := range []string{"tor+", "mirror+", "mirror+file:"} {
		s = strings.TrimPrefix(s, p)
	}
	u, err := url.Parse(s)
	if err != nil || u.Hostname() == "" {
		return "", false
	}
	switch u.Scheme {
	case "http", "https", "ftp":
		return s, true
	}
	return "", false
}

// aptOneLine reads "deb [options] URI suite [components]" lines.
func aptOneLine(b []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 || (f[0] != "deb" && f[0] != "deb-src") {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			// Options may contain spaces: skip to the closing bracket.
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) == 0 {
				continue
			}
			f = f[1:]
		}
		if len(f) > 0 {
			if u, ok := repoURL(f[0]); ok {
				out = append(out, u)
			}
		}
	}
	return out
}

// aptDeb822 reads the URIs of enabled stanzas of a .sources file.
func aptDeb822(b []byte) []string {
	var out, uris []string
	enabled := true
	key := ""
	flush := func() {
		if enabled {
			for _, u := range uris {
				if u, ok := repoURL(u); ok {
					out = append(out, u)
				}
			}
		}
		uris, enabled, key = nil, true, ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
			continue
		case strings.HasPrefix(line, "#"):
			continue
		case line[0] == ' ' || line[0] == '\t':
			if key == "uris" {
				uris = append(uris, strings.Fields(line)...)
			}
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		key = strings.ToLower(strings.TrimSpace(k))
		switch key {
		case "uris":
			uris = append(uris, strings.Fields(v)...)
		case "enabled":
			enabled = strings.ToLower(strings.TrimSpace(v)) != "no"
		}
	}
	flush()
	return out
}

// iniRepos reads baseurl, mirrorlist and metalink of the enabled sections
// of a yum/dnf or zypper .repo file; baseurl may list several URLs,
// separated by spaces or commas or on continuation lines.
func iniRepos(b []byte) []string {
	var out, cur []string
	enabled := true
	key := ""
	flush := func() {
		if enabled {
			out = append(out, cur...)
		}
		cur, enabled, key = nil, true, ""
	}
	addURLs := func(v string) {
		for _, u := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
			if u, ok := repoURL(u); ok {
				cur = append(cur, u)
			}
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "["):
			flush()
			continue
		case trimmed == "" || strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, ";"):
			continue
		case line[0] == ' ' || line[0] == '\t':
			if key == "baseurl" {
				addURLs(trimmed)
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		key = strings.ToLower(strings.TrimSpace(k))
		switch key {
		case "baseurl", "mirrorlist", "metalink":
			addURLs(strings.TrimSpace(v))
		case "enabled":
			v = strings.ToLower(strings.TrimSpace(v))
			enabled = v != "0" && v != "no" && v != "false"
		}
	}
	flush()
	return out
}

// pacmanServers reads "Server = URL" lines and follows "Include = FILE".
func pacmanServers(read func(string) []byte, name string, depth int) []string {
	if depth > 4 {
		return nil
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(read(name)))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "Server":
			if u, ok := repoURL(v); ok {
				out = append(out, u)
			}
		case "Include":
			if path.IsAbs(v) && v != name {
				out = append(out, pacmanServers(read, v, depth+1)...)
			}
		}
	}
	return out
}
