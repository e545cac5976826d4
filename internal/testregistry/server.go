package testregistry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/racker-postroj/racker/internal/fileio"
	"github.com/racker-postroj/racker/internal/humanize"
)

// RegistryBinary is where Debian's docker-registry package installs the
// CNCF distribution registry.
const RegistryBinary = "/usr/bin/docker-registry"

// ErrNoRegistry means docker-registry is not installed.
var ErrNoRegistry = errors.New("docker-registry is not installed (apt-get install docker-registry)")

// Server is a docker-registry child process listening on 127.0.0.1 with
// filesystem storage under a directory owned by the caller.
type Server struct {
	addr    string
	storage string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd has been waited for
	waitErr error         // valid after exited is closed
}

// Start runs docker-registry with its storage, configuration and log under
// dir, which must exist, and returns once GET /v2/ answers. The child gets
// SIGKILL when the thread that started it dies, so it never outlives the test
// process; Close stops it earlier. The caller removes dir after Close.
func Start(ctx context.Context, dir string) (*Server, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		if _, statErr := os.Stat(RegistryBinary); statErr != nil {
			return nil, ErrNoRegistry
		}
		bin = RegistryBinary
	}
	// Picking a free port and handing it to a child is racy: another process
	// may take it in between. The registry then exits at once, so retry.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		s, err := start(ctx, bin, dir)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	return nil, fmt.Errorf("starting docker-registry: %w", lastErr)
}

var errAddrInUse = errors.New("address already in use")

func start(ctx context.Context, bin, dir string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{
		addr:    fmt.Sprintf("127.0.0.1:%d", port),
		storage: filepath.Join(dir, "storage"),
		logPath: filepath.Join(dir, "registry.log"),
		exited:  make(chan struct{}),
	}
	if err := os.MkdirAll(s.storage, 0o755); err != nil {
		return nil, err
	}
	config := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(config, []byte(s.config()), 0o644); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own copy

	// Not exec.CommandContext: the server must outlive the ctx of Start.
	s.cmd = exec.Command(bin, "serve", config)
	s.cmd.Stdout = logFile
	s.cmd.Stderr = logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that forked the child exits, not
		// the process. Go only ends threads whose goroutine exits while
		// locked, so pin this goroutine to its thread for the child's life.
		runtime.LockOSThread()
		if err := s.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	if err := s.waitReady(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) config() string {
	// Logs go to the child's stderr, which is the log file.
	return fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: racker-test-only
`, s.storage, s.addr)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	url := "http://" + s.addr + "/v2/"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			log := s.logTail()
			if strings.Contains(log, "address already in use") {
				return fmt.Errorf("%s: %w", s.addr, errAddrInUse)
			}
			return fmt.Errorf("docker-registry exited (%v): %s", s.waitErr, log)
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w: %s", url, ctx.Err(), s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) logTail() string {
	return strings.Join(humanize.ReadTail(s.logPath, 20), " | ")
}

// Addr returns the registry's host:port, such as "127.0.0.1:40123".
func (s *Server) Addr() string { return s.addr }

// Done is closed once the registry process has exited, whether Close
// stopped it or it died on its own.
func (s *Server) Done() <-chan struct{} { return s.exited }

// LogPath returns the file that receives the registry's log.
func (s *Server) LogPath() string { return s.logPath }

// Close stops the registry: SIGTERM, then SIGKILL after five seconds.
// It is safe to call more than once.
func (s *Server) Close() error {
	select {
	case <-s.exited:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	return nil
}

// blobPath returns where distribution's filesystem driver keeps blob data.
func (s *Server) blobPath(h v1.Hash) string {
	return filepath.Join(s.storage, "docker", "registry", "v2", "blobs",
		h.Algorithm, h.Hex[:2], h.Hex, "data")
}

// ReplaceBlob overwrites the stored bytes of the blob named by h with data,
// which must have the same length, so the registry serves content that does
// not match its digest. The registry does not re-verify stored blobs, and it
// keeps one copy per digest, so every repository sharing the blob sees it.
func (s *Server) ReplaceBlob(h v1.Hash, data []byte) error {
	path := s.blobPath(h)
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("replacing blob %s: %w", h, err)
	}
	if len(old) != len(data) {
		return fmt.Errorf("replacing blob %s: have %d bytes, want the stored size %d", h, len(data), len(old))
	}
	if bytes.Equal(old, data) {
		return fmt.Errorf("replacing blob %s: new content is identical", h)
	}
	if err := fileio.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("replacing blob %s: %w", h, err)
	}
	return nil
}
