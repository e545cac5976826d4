package scripttest

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"

	"github.com/racker-postroj/racker/internal/fileio"
)

// lstree [-inodes] DIR FILE
//
// Writes to FILE one line per entry under DIR, DIR itself first as ".":
// type, mode, owner, size and SHA-256 of files, symlink targets, and mtime
// in nanoseconds; with -inodes also the inode. Compare two listings with cmp
// to prove that nothing changed (or, with -inodes, that nothing was
// rewritten). It writes a file, not stdout, to keep thousands of lines out
// of the log.
func cmdLstree(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "lstree [-inodes] DIR FILE"
	if neg {
		ts.Fatalf("unsupported: ! lstree")
	}
	fset := flag.NewFlagSet("lstree", flag.ContinueOnError)
	inodes := fset.Bool("inodes", false, "")
	parseFlags(ts, fset, args, 2, 2, usage)
	root := ts.MkAbs(fset.Arg(0))
	var out strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		line := fmt.Sprintf("%s %s %04o %d:%d", strconv.Quote(rel), fileType(st.Mode), st.Mode&0o7777, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			sum, size, err := fileio.SHA256(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %d %s", size, sum.Hex)
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + strconv.Quote(target)
		}
		line += fmt.Sprintf(" mtime=%d.%09d", st.Mtim.Sec, st.Mtim.Nsec)
		if *inodes {
			line += fmt.Sprintf(" ino=%d", st.Ino)
		}
		fmt.Fprintln(&out, line)
		return nil
	})
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(fset.Arg(1)), []byte(out.String()), 0o644))
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFREG:
		return "file"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFCHR:
		return "chardev"
	case unix.S_IFBLK:
		return "blockdev"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	}
	return "other"
}

// emptydir DIR
//
// Passes if DIR is empty or does not exist; `! emptydir DIR` passes if DIR
// has entries. On failure lists up to 10 of them.
func cmdEmptydir(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: emptydir DIR")
	}
	dir := ts.MkAbs(args[0])
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		ts.Fatalf("emptydir: %v", err)
	}
	switch {
	case neg && len(entries) == 0:
		ts.Fatalf("%s is empty or missing, want entries", args[0])
	case !neg && len(entries) > 0:
		var names []string
		for _, e := range entries[:min(10, len(entries))] {
			names = append(names, e.Name())
		}
		ts.Fatalf("%s has %d entries, want none: %s", args[0], len(entries), strings.Join(names, " "))
	}
}

// waitsize DIR BYTES
//
// Waits until the files under DIR hold at least BYTES bytes (e.g. 30M), so a
// script can interrupt a pull once it is well under way. Gives up after two
// minutes.
func cmdWaitsize(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "waitsize DIR BYTES"
	if neg || len(args) != 2 {
		ts.Fatalf("usage: %s", usage)
	}
	want, err := parseBytes(args[1])
	if err != nil {
		ts.Fatalf("%v\nusage: %s", err, usage)
	}
	dir := ts.MkAbs(args[0])
	start := time.Now()
	for {
		var total int64
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if info, err := d.Info(); err == nil {
					total += info.Size()
				}
			}
			return nil // entries come and go while racker works
		})
		if total >= want {
			ts.Logf("%s holds %d bytes after %v", args[0], total, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > 2*time.Minute {
			ts.Fatalf("%s holds %d bytes after %v, want %d", args[0], total, time.Since(start).Round(time.Second), want)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func parseBytes(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q (want N, NK or NM)", s)
	}
	return n * mult, nil
}

// nomounts DIR
//
// Passes if nothing is mounted at or below DIR in this process's mount
// namespace (the host's); `! nomounts DIR` if something is. Lists what is.
func cmdNomounts(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: nomounts DIR")
	}
	dir := ts.MkAbs(args[0])
	all, err := mountPoints()
	ts.Check(err)
	var found []string
	for _, m := range all {
		if within(m, dir) {
			found = append(found, m)
		}
	}
	switch {
	case neg && len(found) == 0:
		ts.Fatalf("nothing is mounted under %s", dir)
	case !neg && len(found) > 0:
		ts.Fatalf("mounted under %s:\n%s", dir, strings.Join(found, "\n"))
	}
}

// waitfor [-timeout DUR] FILE [REGEXP]
//
// Waits until FILE exists and, with REGEXP, until its content matches it
// (multi-line mode, as for stdout). Gives up after DUR (default 1m).
func cmdWaitfor(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "waitfor [-timeout DUR] FILE [REGEXP]"
	if neg {
		ts.Fatalf("unsupported: ! waitfor")
	}
	fset := flag.NewFlagSet("waitfor", flag.ContinueOnError)
	timeout := fset.Duration("timeout", time.Minute, "")
	parseFlags(ts, fset, args, 1, 2, usage)
	file := ts.MkAbs(fset.Arg(0))
	var re *regexp.Regexp
	if fset.NArg() == 2 {
		var err error
		if re, err = regexp.Compile("(?m)" + fset.Arg(1)); err != nil {
			ts.Fatalf("waitfor: %v\nusage: %s", err, usage)
		}
	}
	start := time.Now()
	for {
		data, err := os.ReadFile(file)
		if err == nil && (re == nil || re.Match(data)) {
			ts.Logf("waitfor: %s ready after %v", fset.Arg(0), time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > *timeout {
			if err != nil {
				ts.Fatalf("waitfor: %v after %v", err, *timeout)
			}
			ts.Fatalf("waitfor: %s does not match %q after %v; it holds:\n%s", fset.Arg(0), fset.Arg(1), *timeout, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
