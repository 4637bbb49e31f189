package upstream

import (
	"bytes"
	"crypto/x509"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRotationLoggedOnce: the HTTP/1.1 pool and the HTTP/2 transport of watches follow the same
// certificate files, each switching at its own next request; the log says once that the certificate
// changed.
func TestRotationLoggedOnce(t *testing.T) {
	p := newTestPKI(t)
	srv := newIdentityServer(t, p, true)
	certA, keyA := p.issue(t, "identity-a", x509.ExtKeyUsageClientAuth)
	certB, keyB := p.issue(t, "identity-b", x509.ExtKeyUsageClientAuth)
	kubeconfig, certFile, keyFile := writeKubeconfig(t, t.TempDir(), srv.URL, p, certA, keyA)
	var logs lockedBuffer
	up, err := New(Config{Kubeconfig: kubeconfig, CertReloadInterval: time.Second, HTTP2: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if up.Transport == up.WatchTransport {
		t.Fatal("one transport for watches and other requests, want two")
	}
	replace(t, keyFile, keyB)
	replace(t, certFile, certB)
	for name, rt := range map[string]http.RoundTripper{"requests": up.Transport, "watches": up.WatchTransport} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err := get(t, rt, srv.URL+"/")
			if err == nil && got == "identity-b" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s transport 5s after the rotation: got %q, %v; want identity-b", name, got, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if n := strings.Count(logs.String(), "client certificate changed"); n != 1 {
		t.Errorf("got %d log lines saying the client certificate changed, want 1:\n%s", n, logs.String())
	}
}

// lockedBuffer is a bytes.Buffer the transports' checks may write from their goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
