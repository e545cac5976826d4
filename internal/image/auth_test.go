package image

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
)

// TestPullWithDockerCredentials checks that credentials come from
// ~/.docker/config.json, as docker and crane read them, and that a refused
// login is a clear error.
func TestPullWithDockerCredentials(t *testing.T) {
	reg := newTestRegistry(t) // to push without authentication
	reg.push(t, "private/img:1", testImage(t, "amd64", tarLayer(t, "secret", "s3cr3t")))
	// The same registry behind basic authentication.
	authed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "wonderland" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		// Forward to the registry that holds the image.
		r2 := r.Clone(r.Context())
		r2.URL.Scheme, r2.URL.Host, r2.RequestURI = "http", reg.host(), ""
		resp, err := http.DefaultTransport.RoundTrip(r2)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	defer authed.Close()
	host := strings.TrimPrefix(authed.URL, "http://")
	ref := MustParseReference(host + "/private/img:1")

	// docker's config package looks up its directory once per process:
	// one directory, rewritten.
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", dir)
	writeConfig := func(user, pass string) {
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		cfg := `{"auths":{"` + host + `":{"auth":"` + auth + `"}}}`
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	writeConfig("alice", "wrong")
	st := newStore(t)
	_, err := st.Pull(context.Background(), ref, PullOptions{Keychain: authn.DefaultKeychain})
	if err == nil || !strings.Contains(err.Error(), "pulling "+ref.String()+": access denied") {
		t.Fatalf("refused credentials: %v", err)
	}

	writeConfig("alice", "wonderland")
	res, err := st.Pull(context.Background(), ref, PullOptions{}) // nil Keychain means docker's
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(res.Image.RootFS, "secret")); got != "s3cr3t" {
		t.Errorf("secret = %q", got)
	}
}

// stopTransport fails the test if a request gets through.
type stopTransport struct{ t *testing.T }

func (s stopTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	s.t.Errorf("request to %s was sent", r.URL)
	return nil, errors.New("sent")
}

func TestPlainHTTPOnlyToLoopback(t *testing.T) {
	tr := loopbackOnlyHTTP{next: stopTransport{t}}
	for _, u := range []string{"http://10.1.2.3:5000/v2/", "http://registry.example/v2/", "http://192.168.0.1/v2/"} {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		if _, err := tr.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "refusing plain HTTP") {
			t.Errorf("%s: %v", u, err)
		}
	}
	ok := loopbackOnlyHTTP{next: roundTripFunc(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	})}
	for _, u := range []string{"http://127.0.0.1:5000/v2/", "http://[::1]:5000/v2/", "http://localhost/v2/", "https://10.1.2.3/v2/"} {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		if _, err := ok.RoundTrip(req); err != nil {
			t.Errorf("%s refused: %v", u, err)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
