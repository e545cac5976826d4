package scripttest

import (
	"slices"
	"testing"
)

func TestSelectedHosts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		ok   bool
	}{
		{"", []string{"trixie", "sid"}, true},
		{"none", nil, true},
		{"sid", []string{"sid"}, true},
		{"trixie, sid", []string{"trixie", "sid"}, true},
		{"bookworm", nil, false},
	} {
		got, err := selectedHosts(tc.in)
		if (err == nil) != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("selectedHosts(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestCountResults(t *testing.T) {
	out := `=== RUN   TestScripts
        --- FAIL: TestHostScripts (0.00s)
            --- FAIL: TestHostScripts/machined_register (69.86s)
            --- PASS: TestScripts/pull_debian (21.02s)
            --- PASS: TestScripts/run_basic (19.05s)
            --- SKIP: TestScripts/run_tty (0.01s)
--- FAIL: TestScripts (0.01s)
`
	if passed, total := countResults(out); passed != 2 || total != 4 {
		t.Errorf("countResults = %d/%d, want 2/4", passed, total)
	}
}
