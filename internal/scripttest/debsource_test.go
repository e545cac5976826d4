package scripttest

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/racker-postroj/racker/internal/flock"
	"github.com/racker-postroj/racker/internal/testenv"
)

var debsourceCmds = map[string]func(ts *testscript.TestScript, neg bool, args []string){
	"debsource": cmdDebsource,
}

// cmdDebsource fetches a Debian source package from the mirror into the
// script's work directory and sets VAR to the path of its .dsc:
//
//	debsource SUITE PACKAGE VAR
//
// The suite's Sources index (main) names the .dsc and its files with their
// SHA-256, whatever version the suite has today; files are verified and
// cached under $RACKER_TEST_CACHE/debian-sources, the index for a day.
func cmdDebsource(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: debsource SUITE PACKAGE VAR")
	}
	suite, pkg, v := args[0], args[1], args[2]
	mirror := strings.TrimSuffix(testenv.Mirror(suite), "/")
	cache := filepath.Join(testenv.CacheDir(), "debian-sources")
	ts.Check(os.MkdirAll(cache, 0o755))
	unlock, err := flock.Lock(context.Background(), filepath.Join(cache, ".lock"), nil)
	ts.Check(err)
	defer unlock()

	index := filepath.Join(cache, suite+"-main-Sources")
	if fi, err := os.Stat(index); err != nil || time.Since(fi.ModTime()) > 24*time.Hour {
		ts.Check(fetchTo(mirror+"/dists/"+suite+"/main/source/Sources.gz", index, "", true))
	}
	dir, files, err := sourceFiles(index, pkg)
	ts.Check(err)
	dsc := ""
	for _, f := range files {
		cached := filepath.Join(cache, f.name)
		if _, err := os.Stat(cached); err != nil {
			ts.Check(fetchTo(mirror+"/"+dir+"/"+f.name, cached, f.sha256, false))
		}
		data, err := os.ReadFile(cached)
		ts.Check(err)
		ts.Check(os.WriteFile(ts.MkAbs(f.name), data, 0o644))
		if strings.HasSuffix(f.name, ".dsc") {
			dsc = ts.MkAbs(f.name)
		}
	}
	if dsc == "" {
		ts.Fatalf("debsource: %s in %s has no .dsc", pkg, suite)
	}
	ts.Setenv(v, dsc)
}

type sourceFile struct{ name, sha256 string }

// sourceFiles finds pkg's stanza in a Sources index and returns its
// Directory and Checksums-Sha256 files.
func sourceFiles(index, pkg string) (string, []sourceFile, error) {
	f, err := os.Open(index)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var (
		inPkg, inSums bool
		dir           string
		files         []sourceFile
	)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if inPkg {
				return dir, files, nil
			}
			dir, files, inSums = "", nil, false
		case strings.HasPrefix(line, "Package: "):
			inPkg = strings.TrimPrefix(line, "Package: ") == pkg
		case strings.HasPrefix(line, "Directory: "):
			dir = strings.TrimPrefix(line, "Directory: ")
		case strings.HasPrefix(line, "Checksums-Sha256:"):
			inSums = true
		case inSums && strings.HasPrefix(line, " "):
			if w := strings.Fields(line); len(w) == 3 {
				files = append(files, sourceFile{name: w[2], sha256: w[0]})
			}
		default:
			inSums = false
		}
	}
	if inPkg {
		return dir, files, sc.Err()
	}
	if err := sc.Err(); err != nil {
		return "", nil, err
	}
	return "", nil, fmt.Errorf("no source package %s in %s", pkg, index)
}

// fetchTo downloads url to dest atomically, gunzipped if gunzip, and checks
// its SHA-256 against sum unless sum is empty.
func fetchTo(url, dest, sum string, gunzip bool) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var r io.Reader = resp.Body
	if gunzip {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return fmt.Errorf("GET %s: %w", url, err)
		}
		r = zr
	}
	tmp, err := os.CreateTemp(filepath.Dir(dest), ".fetch-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(tmp, h), r)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); sum != "" && got != sum {
		return fmt.Errorf("GET %s: sha256 %s, the index says %s", url, got, sum)
	}
	return os.Rename(tmp.Name(), dest)
}
