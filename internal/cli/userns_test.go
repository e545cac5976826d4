package cli

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/racker-postroj/racker/internal/nspawn"
)

func TestUserNSHint(t *testing.T) {
	for _, tc := range []struct {
		err  error
		hint bool
	}{
		{fmt.Errorf("booting web: %w by the file system of /store (mount_setattr: invalid argument)", nspawn.ErrNoIDMap), true},
		{fmt.Errorf("starting web: %w: needs 257", nspawn.ErrNoUserNS), true},
		{errors.New("booting web: boot timed out"), false},
	} {
		got := userNSHint(tc.err)
		if (got != "") != tc.hint || (tc.hint && !strings.Contains(got, "--userns=host")) {
			t.Errorf("userNSHint(%v) = %q", tc.err, got)
		}
	}
}
