package testenv

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Mirror returns the Debian mirror that this machine's apt uses for suite:
// $RACKER_TEST_MIRROR (MirrorVar) if set, else the first URI in /etc/apt/sources.list or
// /etc/apt/sources.list.d/*.{list,sources} that serves suite, else the first
// that looks like a Debian archive, else http://deb.debian.org/debian.
func Mirror(suite string) string {
	if m := os.Getenv(MirrorVar); m != "" {
		return m
	}
	files := []string{"/etc/apt/sources.list"}
	for _, pattern := range []string{"*.list", "*.sources"} {
		more, _ := filepath.Glob(filepath.Join("/etc/apt/sources.list.d", pattern))
		files = append(files, more...)
	}
	var fallback string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, src := range parseSources(f, string(data)) {
			if !strings.Contains(src.uri, "debian") || strings.Contains(src.uri, "security") {
				continue
			}
			if slices.Contains(src.suites, suite) {
				return src.uri
			}
			if fallback == "" {
				fallback = src.uri
			}
		}
	}
	if fallback != "" {
		return fallback
	}
	return "http://deb.debian.org/debian"
}

type aptSource struct {
	uri    string
	suites []string
}

// parseSources reads both the one-line format (*.list) and deb822 (*.sources).
func parseSources(file, text string) []aptSource {
	var out []aptSource
	if strings.HasSuffix(file, ".sources") {
		for _, stanza := range strings.Split(text, "\n\n") {
			fields := map[string]string{}
			for _, line := range strings.Split(stanza, "\n") {
				if strings.HasPrefix(line, "#") {
					continue
				}
				if k, v, ok := strings.Cut(line, ":"); ok {
					fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
				}
			}
			if !slices.Contains(strings.Fields(fields["types"]), "deb") {
				continue
			}
			if strings.EqualFold(fields["enabled"], "no") {
				continue
			}
			for _, uri := range strings.Fields(fields["uris"]) {
				out = append(out, aptSource{uri: uri, suites: strings.Fields(fields["suites"])})
			}
		}
		return out
	}
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") { // options such as [signed-by=...]
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) > 0 {
				f = f[1:]
			}
		}
		if len(f) >= 2 {
			out = append(out, aptSource{uri: f[0], suites: []string{f[1]}})
		}
	}
	return out
}
