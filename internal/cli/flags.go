package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker/cli/pkg/kvfile"

	"github.com/racker-postroj/racker/internal/nspawn"
)

// envEntry turns -e KEY=VALUE into itself and -e KEY into KEY=<value here>
// (nothing when KEY is not set here), as docker does.
func envEntry(e string) (string, error) {
	k, _, hasValue := strings.Cut(e, "=")
	if k == "" || strings.ContainsAny(k, " \t\n") {
		return "", fmt.Errorf("invalid environment variable %q (want KEY=VALUE)", e)
	}
	if hasValue {
		return e, nil
	}
	if v, ok := os.LookupEnv(k); ok {
		return k + "=" + v, nil
	}
	return "", nil
}

// readEnvFile reads an --env-file with docker's own parser: KEY=VALUE lines
// as they are (no quoting, no expansion, trailing blanks kept), KEY lines
// taking KEY's value here (nothing when it is not set here), leading blanks,
// blank lines and # comments skipped, a UTF-8 BOM dropped.
func readEnvFile(name string) ([]string, error) {
	env, err := kvfile.Parse(name, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("--env-file: %w", err)
	}
	return env, nil
}

// parseVolumes parses -v HOST:CONTAINER[:ro|rw].
func parseVolumes(specs []string) ([]nspawn.Bind, error) {
	var binds []nspawn.Bind
	for _, v := range specs {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
			return nil, fmt.Errorf("invalid volume %q (want HOST:CONTAINER[:ro])", v)
		}
		b := nspawn.Bind{Host: parts[0], Container: parts[1]}
		if len(parts) == 3 {
			switch parts[2] {
			case "ro":
				b.ReadOnly = true
			case "rw":
			default:
				return nil, fmt.Errorf("invalid volume %q: unexpected mode %q (valid: ro, rw)", v, parts[2])
			}
		}
		if !filepath.IsAbs(b.Host) {
			abs, err := filepath.Abs(b.Host)
			if err != nil || !strings.HasPrefix(b.Host, ".") {
				return nil, fmt.Errorf("invalid volume %q: the host path must be absolute or start with . (named volumes are not supported)", v)
			}
			b.Host = abs
		}
		if !filepath.IsAbs(b.Container) {
			return nil, fmt.Errorf("invalid volume %q: the container path must be absolute", v)
		}
		if _, err := os.Stat(b.Host); err != nil {
			return nil, fmt.Errorf("volume %q: %w", v, err)
		}
		binds = append(binds, b)
	}
	return binds, nil
}
