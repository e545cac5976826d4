package autopkgtest

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/racker-postroj/racker/internal/humanize"
)

// Runner runs argv on the testbed as root with the given standard streams
// (nil: none) and returns its exit status.
type Runner func(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error)

// Copier copies files between the host and a testbed through tar streams
// over a Runner, the way autopkgtest's own servers do without a shared
// directory. What comes up from the testbed is untrusted: it is unpacked on
// the host with every path confined to the destination (os.Root), without
// owners, setuid bits or device files.
type Copier struct {
	Run Runner
}

// CopyDown copies the host file or directory host to tb on the testbed.
func (c Copier) CopyDown(ctx context.Context, host, tb string, dir bool) error {
	host, tb = strings.TrimSuffix(host, "/"), strings.TrimSuffix(tb, "/")
	if tb == "" {
		tb = "/"
	}
	if !dir {
		f, err := os.Open(host)
		if err != nil {
			return &CopyError{err}
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return &CopyError{err}
		}
		if !fi.Mode().IsRegular() {
			return &CopyError{fmt.Errorf("%s is not a regular file", host)}
		}
		script := `cat > "$1"`
		if fi.Mode()&0o111 != 0 {
			script += `; chmod +x -- "$1"`
		}
		return c.run(ctx, []string{"sh", "-ec", script, "sh", tb}, f, nil)
	}
	if fi, err := os.Stat(host); err != nil || !fi.IsDir() {
		if err == nil {
			err = fmt.Errorf("%s is not a directory", host)
		}
		return &CopyError{err}
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeTar(ctx, pw, host)) }()
	defer pr.Close()
	return c.run(ctx, []string{"sh", "-ec",
		`mkdir -p -- "$1"; cd -- "$1"; exec tar --warning=none --preserve-permissions --extract --no-same-owner -f -`,
		"sh", tb}, pr, nil)
}

// CopyUp copies the testbed file or directory tb to host.
func (c Copier) CopyUp(ctx context.Context, tb, host string, dir bool) error {
	host, tb = strings.TrimSuffix(host, "/"), strings.TrimSuffix(tb, "/")
	if tb == "" {
		tb = "/"
	}
	if !dir {
		f, err := os.OpenFile(host, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return &CopyError{err}
		}
		err = c.run(ctx, []string{"sh", "-ec", `exec cat -- "$1"`, "sh", tb}, nil, f)
		if cerr := f.Close(); err == nil && cerr != nil {
			err = &CopyError{cerr}
		}
		return err
	}
	if err := os.MkdirAll(host, 0o755); err != nil {
		return &CopyError{err}
	}
	pr, pw := io.Pipe()
	extracted := make(chan error, 1)
	go func() {
		err := extractTar(pr, host)
		// Drain what the testbed still sends so that its tar exits.
		io.Copy(io.Discard, pr)
		extracted <- err
	}()
	err := c.run(ctx, []string{"sh", "-ec", `cd -- "$1"; exec tar --warning=none -c -f - .`, "sh", tb}, nil, pw)
	pw.Close()
	if xerr := <-extracted; err == nil && xerr != nil {
		err = &CopyError{fmt.Errorf("unpacking %s into %s: %w", tb, host, xerr)}
	}
	return err
}

func (c Copier) run(ctx context.Context, argv []string, stdin io.Reader, stdout io.Writer) error {
	var stderr strings.Builder
	code, err := c.Run(ctx, argv, stdin, stdout, &limitedWriter{w: &stderr, n: 2048})
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return &CopyError{err}
	}
	if code != 0 {
		msg := fmt.Sprintf("the copy on the testbed exited with status %d", code)
		if s := humanize.OneLine(stderr.String()); s != "" {
			msg += ": " + s
		}
		return &CopyError{errors.New(msg)}
	}
	return nil
}

// limitedWriter keeps the first n bytes written to it and discards the rest.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

// writeTar writes the tree under dir as a tar stream: directories, regular
// files and symlinks (not followed), names relative to dir.
func writeTar(ctx context.Context, w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		case fi.IsDir(), fi.Mode().IsRegular():
		default:
			return nil // sockets, devices, fifos: not copied
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// extractTar unpacks a tar stream into dir. Every name is resolved inside
// dir by os.Root, so "..", absolute names and symlinks (from this archive
// or already there) cannot reach outside it. Entries get permission bits
// only (no owners, no setuid/setgid/sticky); hard links become copies of
// their target's content when it is inside dir; devices and fifos are
// skipped.
func extractTar(r io.Reader, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return err
		}
		name := path.Clean("/" + hdr.Name)[1:]
		if name == "" {
			continue // the directory itself
		}
		perm := fs.FileMode(hdr.Mode) & fs.ModePerm
		if err := extractEntry(root, tr, hdr, name, perm); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
}

func extractEntry(root *os.Root, tr *tar.Reader, hdr *tar.Header, name string, perm fs.FileMode) error {
	if parent := path.Dir(name); parent != "." {
		if err := root.MkdirAll(parent, 0o755); err != nil {
			return err
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if fi, err := root.Lstat(name); err == nil && !fi.IsDir() {
			if err := root.Remove(name); err != nil {
				return err
			}
		}
		if err := root.Mkdir(name, perm|0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		return root.Chmod(name, perm|0o700)
	case tar.TypeReg, '\x00': // '\x00' is the old name of a regular file
		return writeFile(root, name, tr, perm)
	case tar.TypeSymlink:
		removeNonDir(root, name)
		return root.Symlink(hdr.Linkname, name)
	case tar.TypeLink:
		target := path.Clean("/" + hdr.Linkname)[1:]
		src, err := root.Open(target)
		if err != nil {
			return err
		}
		defer src.Close()
		return writeFile(root, name, src, perm)
	}
	return nil
}

// writeFile replaces name with a regular file holding r's content. A
// symlink there is replaced, not followed.
func writeFile(root *os.Root, name string, r io.Reader, perm fs.FileMode) error {
	removeNonDir(root, name)
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Chmod(name, perm) // exactly, whatever the umask
	}
	return err
}

// removeNonDir removes name if it exists and is not a directory.
func removeNonDir(root *os.Root, name string) {
	if fi, err := root.Lstat(name); err == nil && !fi.IsDir() {
		root.Remove(name)
	}
}
