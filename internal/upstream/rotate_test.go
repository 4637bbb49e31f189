package upstream

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// testPKI is a CA with a loopback server certificate, able to issue client certificates.
type testPKI struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPEM  []byte
	server tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &testPKI{ca: ca, caKey: key, caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	certPEM, keyPEM := p.issue(t, "server", x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1))
	if p.server, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return p
}

var serial atomic.Int64

func (p *testPKI) issue(t *testing.T, cn string, usage x509.ExtKeyUsage, ips ...net.IP) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(10 + serial.Add(1)), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}

// identityServer answers every request with the common name of the client certificate of its
// connection; /slow waits for release first. It counts open connections per client name.
type identityServer struct {
	*httptest.Server
	release chan struct{}
	unblock func() // releases /slow, once
	mu      sync.Mutex
	open    map[string]int
	conns   map[net.Conn]string
	proto   string // of the last request
}

func newIdentityServer(t *testing.T, p *testPKI, http2 bool) *identityServer {
	t.Helper()
	s := &identityServer{release: make(chan struct{}), open: map[string]int{}, conns: map[net.Conn]string{}}
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn := r.TLS.PeerCertificates[0].Subject.CommonName
		s.mu.Lock()
		s.proto = r.Proto
		for c, name := range s.conns {
			if name == "" && c.RemoteAddr().String() == r.RemoteAddr {
				s.conns[c] = cn
				s.open[cn]++
			}
		}
		s.mu.Unlock()
		if r.URL.Path == "/slow" {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-s.release
		}
		_, _ = io.WriteString(w, cn)
	}))
	s.Config.ConnState = func(c net.Conn, st http.ConnState) {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch st {
		case http.StateNew:
			s.conns[c] = ""
		case http.StateClosed, http.StateHijacked:
			if name := s.conns[c]; name != "" {
				s.open[name]--
			}
			delete(s.conns, c)
		}
	}
	s.TLS = &tls.Config{Certificates: []tls.Certificate{p.server}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	s.EnableHTTP2 = http2
	s.StartTLS()
	s.unblock = sync.OnceFunc(func() { close(s.release) })
	t.Cleanup(s.Close)
	t.Cleanup(s.unblock) // runs first: a failed test must not leave /slow blocking Close
	return s
}

func (s *identityServer) openConns(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open[name]
}

// writeKubeconfig writes cert, key, CA and a kubeconfig naming them by path.
func writeKubeconfig(t *testing.T, dir, server string, p *testPKI, certPEM, keyPEM []byte) (kubeconfig, certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	caFile := filepath.Join(dir, "ca.crt")
	for f, b := range map[string][]byte{certFile: certPEM, keyFile: keyPEM, caFile: p.caPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig = filepath.Join(dir, "kubeconfig")
	cfg := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"c": {Server: server, CertificateAuthority: caFile}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"u": {ClientCertificate: certFile, ClientKey: keyFile}},
		Contexts:       map[string]*clientcmdapi.Context{"c": {Cluster: "c", AuthInfo: "u"}},
		CurrentContext: "c",
	}
	if err := clientcmd.WriteToFile(cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}
	return kubeconfig, certFile, keyFile
}

// replace writes b to path atomically, as a rotation does.
func replace(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, rt http.RoundTripper, url string) (string, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), "GET", url, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestCertRotationKeepsRequestsInFlight: a request in flight when the certificate files change finishes
// on its connection; new requests use the new identity; a half-done rotation (new key, old
// certificate) is not used; the old connections are closed once their requests are done.
func TestCertRotationKeepsRequestsInFlight(t *testing.T) {
	for _, tt := range []struct {
		name         string
		http2, watch bool // Config.HTTP2; the transport of watches, else of other requests
	}{
		{"http1.1", false, false},
		{"http1.1 watches", false, true},
		{"http2 watches", true, true},
		{"http1.1 beside http2 watches", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) { testCertRotation(t, tt.http2, tt.watch) })
	}
}

func testCertRotation(t *testing.T, http2, watch bool) {
	p := newTestPKI(t)
	srv := newIdentityServer(t, p, http2)
	certA, keyA := p.issue(t, "identity-a", x509.ExtKeyUsageClientAuth)
	certB, keyB := p.issue(t, "identity-b", x509.ExtKeyUsageClientAuth)
	kubeconfig, certFile, keyFile := writeKubeconfig(t, t.TempDir(), srv.URL, p, certA, keyA)
	up, err := New(Config{Kubeconfig: kubeconfig, CertReloadInterval: time.Second, HTTP2: http2})
	if err != nil {
		t.Fatal(err)
	}
	rt, h2 := up.Transport, false
	if watch {
		rt, h2 = up.WatchTransport, http2
	}
	if got, err := get(t, rt, srv.URL+"/"); err != nil || got != "identity-a" {
		t.Fatalf("before the rotation: got %q, %v; want identity-a", got, err)
	}
	srv.mu.Lock()
	proto := srv.proto
	srv.mu.Unlock()
	if want := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2]; proto != want {
		t.Fatalf("protocol: got %s, want %s", proto, want)
	}

	// A long request (a watch, say) is in flight during the rotation.
	req, _ := http.NewRequest("GET", srv.URL+"/slow", nil)
	slow, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}

	replace(t, keyFile, keyB) // half-way: the new key with the old certificate
	// A request finding a check due starts one beside it; wait until a check has read the half-done pair.
	rot, ok := rt.(*rotatingTransport)
	if !ok {
		t.Fatalf("transport: got %T, want the rotating transport", rt)
	}
	deadline := time.Now().Add(5 * time.Second)
	for rot.lastErr.Load() == nil {
		if time.Now().After(deadline) {
			t.Fatal("half-way through the rotation: the mismatched files were not checked within 5s")
		}
		if _, err := get(t, rt, srv.URL+"/"); err != nil {
			t.Fatalf("half-way through the rotation: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got, err := get(t, rt, srv.URL+"/"); err != nil || got != "identity-a" {
		t.Fatalf("half-way through the rotation: got %q, %v; want identity-a still", got, err)
	}
	replace(t, certFile, certB)
	deadline = time.Now().Add(5 * time.Second)
	for {
		got, err := get(t, rt, srv.URL+"/")
		if err != nil {
			t.Fatalf("during the rotation: %v", err)
		}
		if got == "identity-b" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the rotation: got %q 5s later, want identity-b", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The server learns of a connection the client closed when it reads the close: wait for that.
	deadline = time.Now().Add(5 * time.Second)
	for srv.openConns("identity-a") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("old identity's connections while its request is in flight: got %d 5s after the switch, want 1", srv.openConns("identity-a"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.unblock()
	b, err := io.ReadAll(slow.Body)
	slow.Body.Close()
	if err != nil || string(b) != "identity-a" {
		t.Fatalf("the request in flight: got %q, %v; want it completed as identity-a", b, err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for srv.openConns("identity-a") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("old identity's connections after its last request: got %d, want 0", srv.openConns("identity-a"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The typed client follows the same rotation: it shares the transport.
	if up.REST.Transport == nil || len(up.REST.CertFile) != 0 {
		t.Errorf("REST config: got Transport %v and CertFile %q, want the rotating transport and no file", up.REST.Transport, up.REST.CertFile)
	}
}

// TestInlineCertificateUsesClientGo: a kubeconfig with certificate data inline has nothing to rotate and
// keeps client-go's own transport.
func TestInlineCertificateUsesClientGo(t *testing.T) {
	p := newTestPKI(t)
	srv := newIdentityServer(t, p, false)
	cert, key := p.issue(t, "inline", x509.ExtKeyUsageClientAuth)
	rc := &rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM, CertData: cert, KeyData: key}}
	cfg := Config{MaxIdleConns: 4, CertReloadInterval: time.Second, DialTimeout: time.Second}
	up, err := FromREST(rc, "test", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if up.REST.Transport != nil {
		t.Errorf("got a custom transport for inline certificate data, want client-go's")
	}
	if got, err := get(t, up.Transport, srv.URL+"/"); err != nil || got != "inline" {
		t.Fatalf("got %q, %v; want inline", got, err)
	}
}
