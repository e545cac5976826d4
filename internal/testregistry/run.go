package testregistry

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/racker-postroj/racker/internal/humanize"
)

// command returns an exec.Cmd that is killed when ctx ends and whose I/O is
// abandoned shortly after, so a stuck child cannot hang a test.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs name with args, sending stdout to out (discarded when nil), and
// returns an error that carries the tail of the command's stderr.
func run(ctx context.Context, out io.Writer, name string, args ...string) error {
	cmd := command(ctx, name, args...)
	var stderr humanize.Tail
	cmd.Stdout = out
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.Last(20))
	}
	return nil
}
