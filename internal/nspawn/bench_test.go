package nspawn

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The boot benchmark compares racker's cycle (Start, Exec "true",
// Shutdown) with the raw floor: systemd-nspawn --boot --volatile=overlay
// --notify-ready=yes until READY=1, then SIGTERM (which halts the
// container) and wait for nspawn. Both run on the plain test image and on a
// copy with DefaultMaskedUnits masked, interleaved round by round so that
// load from elsewhere hits all variants alike:
//
//	RACKER_BENCH=1 go test -run TestBootBenchmark -v ./internal/nspawn/
//
// RACKER_BENCH_RUNS sets the rounds (default 10). The Go benchmarks below
// measure the same cycles one variant at a time.

type cycle struct {
	ready, exec, total time.Duration
}

// floorCycle boots rootfs with bare nspawn, waits for READY=1, optionally
// runs true through nsenter, and halts it.
func floorCycle(rootfs, name string, runTrue bool) (cycle, error) {
	var c cycle
	notify, err := ListenNotify()
	if err != nil {
		return c, err
	}
	defer notify.Close()
	start := time.Now()
	cmd := exec.Command("systemd-nspawn", "--boot", "--volatile=overlay", "--notify-ready=yes",
		"--register=no", "--keep-unit", "--directory="+rootfs, "--machine="+name)
	cmd.Env = append(environWithout("NOTIFY_SOCKET"), "NOTIFY_SOCKET="+notify.Addr())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return c, err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	leader, err := notify.WaitReady(context.Background(), cmd.Process.Pid, exited, time.Minute)
	if err != nil {
		return c, err
	}
	c.ready = time.Since(start)
	if runTrue {
		t0 := time.Now()
		if out, err := exec.Command("nsenter", "-t", strconv.Itoa(leader), "-a", "true").CombinedOutput(); err != nil {
			return c, fmt.Errorf("nsenter true: %v: %s", err, out)
		}
		c.exec = time.Since(t0)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	<-exited
	c.total = time.Since(start)
	removePropagateDir(name)
	return c, nil
}

// rackerCycle is racker run --rm IMAGE true: Start, Exec, then Shutdown
// (poweroff) or Kill.
func rackerCycle(rootfs, name, state string, kill bool) (cycle, error) {
	var c cycle
	ctx := context.Background()
	start := time.Now()
	m, err := Start(ctx, Options{Name: name, RootFS: rootfs, StateDir: state})
	if err != nil {
		return c, err
	}
	c.ready = time.Since(start)
	t0 := time.Now()
	code, err := m.Exec(ctx, Process{Args: []string{"true"}})
	c.exec = time.Since(t0)
	stop := func() error { return m.Shutdown(ctx, 0) }
	if kill {
		stop = m.Kill
	}
	if serr := stop(); err == nil {
		err = serr
	}
	if err == nil && code != 0 {
		err = fmt.Errorf("true exited %d", code)
	}
	c.total = time.Since(start)
	return c, err
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

func TestBootBenchmark(t *testing.T) {
	if os.Getenv("RACKER_BENCH") != "1" {
		t.Skip("set RACKER_BENCH=1 to measure boot cycles")
	}
	runs := 10
	if n, err := strconv.Atoi(os.Getenv("RACKER_BENCH_RUNS")); err == nil && n > 0 {
		runs = n
	}
	images := map[string]string{"plain": testRootFS(t, false), "masked": testRootFS(t, true)}
	state := t.TempDir()
	type variant struct{ name, image, kind string }
	var variants []variant
	for _, img := range []string{"plain", "masked"} {
		for _, kind := range []string{"floor", "floor+nsenter true", "racker", "racker kill"} {
			variants = append(variants, variant{kind + " / " + img, img, kind})
		}
	}
	results := map[string][]cycle{}
	for r := 0; r < runs; r++ {
		for _, v := range variants {
			var c cycle
			var err error
			name := testName(t)
			switch v.kind {
			case "floor":
				c, err = floorCycle(images[v.image], name, false)
			case "floor+nsenter true":
				c, err = floorCycle(images[v.image], name, true)
			case "racker kill":
				c, err = rackerCycle(images[v.image], name, state, true)
			default:
				c, err = rackerCycle(images[v.image], name, state, false)
			}
			if err != nil {
				t.Fatalf("%s: %v", v.name, err)
			}
			results[v.name] = append(results[v.name], c)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "medians of %d interleaved runs:\n", runs)
	fmt.Fprintf(&b, "%-28s %10s %10s %10s\n", "cycle", "READY", "exec", "total")
	// READY of racker is Start: boot and the D-Bus connection.
	totals := map[string]time.Duration{}
	for _, v := range variants {
		var ready, ex, total []time.Duration
		for _, c := range results[v.name] {
			ready, ex, total = append(ready, c.ready), append(ex, c.exec), append(total, c.total)
		}
		totals[v.name] = median(total)
		fmt.Fprintf(&b, "%-28s %10s %10s %10s\n", v.name, ms(median(ready)), ms(median(ex)), ms(median(total)))
	}
	for _, img := range []string{"plain", "masked"} {
		fmt.Fprintf(&b, "%s: racker / floor %.2f, racker / floor+nsenter true %.2f, racker kill / floor %.2f\n", img,
			float64(totals["racker / "+img])/float64(totals["floor / "+img]),
			float64(totals["racker / "+img])/float64(totals["floor+nsenter true / "+img]),
			float64(totals["racker kill / "+img])/float64(totals["floor / "+img]))
	}
	t.Log("\n" + b.String())
}

func benchmarkCycle(b *testing.B, masked, floor bool) {
	rootfs := testRootFS(b, masked)
	state := b.TempDir()
	var ready, total []time.Duration
	for b.Loop() {
		var c cycle
		var err error
		if floor {
			c, err = floorCycle(rootfs, testName(b), false)
		} else {
			c, err = rackerCycle(rootfs, testName(b), state, false)
		}
		if err != nil {
			b.Fatal(err)
		}
		ready, total = append(ready, c.ready), append(total, c.total)
	}
	b.ReportMetric(float64(median(ready))/1e6, "ready-ms(median)")
	b.ReportMetric(float64(median(total))/1e6, "total-ms(median)")
}

func BenchmarkFloorCycle(b *testing.B)        { benchmarkCycle(b, false, true) }
func BenchmarkFloorCycleMasked(b *testing.B)  { benchmarkCycle(b, true, true) }
func BenchmarkRackerCycle(b *testing.B)       { benchmarkCycle(b, false, false) }
func BenchmarkRackerCycleMasked(b *testing.B) { benchmarkCycle(b, true, false) }
