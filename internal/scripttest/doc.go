// Package scripttest is the end-to-end harness: `go test ./internal/scripttest`
// runs every testdata/script/*.txtar of the repository root, driving the real
// racker and postroj (the test binary, re-executed under those names)
// against a real docker-registry on loopback, real mmdebstrap-built Debian
// images and real systemd-nspawn containers. The package holds no code
// besides its tests.
//
// Run one script from the repository root with
//
//	RACKER_E2E=1 go test -count=1 -run 'TestScripts/run_basic$' ./internal/scripttest
//
// Environment (named and read in internal/testenv, documented in the
// README's Development section):
//
//	RACKER_E2E=1        every prerequisite condition must hold: a missing one
//	                    fails the script instead of skipping it (CI sets it).
//	UPDATE_SCRIPTS=1    rewrite cmp'd files inside the scripts from the output.
//	RACKER_TEST_CACHE   where built Debian images and template stores are
//	                    cached (default /var/cache/racker-test).
//	RACKER_TEST_MIRROR  the Debian mirror images are built from (default:
//	                    the one this machine's apt uses).
//
// Conditions: [root], [nspawn], [registry], [mmdebstrap] (see condition in
// scripttest_test.go); an unknown name is an error. A script that uses the
// registry says so with [registry], which makes setup start and seed the
// shared one.
//
// Commands besides testscript's own, each documented at its cmd function,
// by file:
//
//	registry_test.go  mkimage, cmpimage, closedport
//	store_test.go     rootfs, warmstore
//	json_test.go      json, setenv
//	files_test.go     lstree, emptydir, waitsize, nomounts, waitfor
//	procs_test.go     exitcode, noprocs, signal, signaled
//	probe_test.go     curatedstore, debimage, serve, waitrunning, nooverlap
//	faults_test.go    faultproxy, nocgroups
//
// Layer specs for mkimage are described by testregistry.SpecDoc. Programs
// besides racker and postroj: pty (see ptyMain in pty_test.go), to run a
// command on a real terminal.
//
// Containers a script leaves running, by failing half-way or on purpose,
// are removed when it ends, whatever happened (see teardown in
// teardown_test.go).
package scripttest
