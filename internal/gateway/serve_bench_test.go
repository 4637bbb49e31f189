package gateway

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/picogate/picogate/internal/registry"
	"github.com/picogate/picogate/internal/upstream"
)

// BenchmarkServe is the gateway's whole cost per request, as `picogate serve` spends it: the device
// port's net/http server over loopback, the request path with the access log on (a text handler
// writing to a file, as to a redirected stderr), and the upstream transport client-go builds, over TLS
// to an upstream in another process (TestServeBenchUpstream), so the upstream's CPU is not counted.
// One device sends the firmware's requests one after another: its GET of its node and its status
// PATCH, on a kept-alive connection and with Connection: close; get-nolog is get with the access log
// off. The upstream is set up as serve's default --upstream-http2 sets it up: these requests go over
// HTTP/1.1 (watches, not measured here, over HTTP/2). It is meant to be read with valgrind's
// callgrind, whose instruction counts do not depend on the machine's load (see docs/benchmarks.md);
// ns/op and cpu-ns/op are as noisy as the machine.
func BenchmarkServe(b *testing.B) {
	up := startBenchUpstream(b)
	heartbeat := `{"status":{"conditions":[` + strings.Repeat(`{"type":"Ready","status":"True","reason":"KubeletReady","lastHeartbeatTime":"2026-12-01T09:00:00Z","lastTransitionTime":"2026-12-01T09:00:00Z"},`, 6) + `{"type":"Ready","status":"True"}]}}`
	for _, w := range []struct {
		name, method, path, body string
		close, nolog             bool
	}{
		{"get", "GET", "/api/v1/nodes/pico-1", "", false, false},
		{"get-close", "GET", "/api/v1/nodes/pico-1", "", true, false},
		{"patch", "PATCH", "/api/v1/nodes/pico-1/status", heartbeat, false, false},
		{"patch-close", "PATCH", "/api/v1/nodes/pico-1/status", heartbeat, true, false},
		{"get-nolog", "GET", "/api/v1/nodes/pico-1", "", false, true}, // what the access log costs
	} {
		b.Run(w.name, func(b *testing.B) {
			addr := startBenchGateway(b, up, true, !w.nolog)
			req := w.method + " " + w.path + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: k3s-pico-node/1.0\r\nAuthorization: Bearer tok-pico-1\r\nAccept: application/json\r\n"
			if w.body != "" {
				req += "Content-Type: application/strategic-merge-patch+json\r\nContent-Length: " + strconv.Itoa(len(w.body)) + "\r\n"
			}
			if w.close {
				req += "Connection: close\r\n"
			}
			req += "\r\n" + w.body
			c := &benchClient{addr: addr, req: []byte(req), close: w.close}
			c.do(b) // the upstream connection is made before the clock starts
			b.ReportAllocs()
			cpu := startCPU()
			b.ResetTimer()
			for range b.N {
				c.do(b)
			}
			b.StopTimer()
			cpu.report(b)
			c.end()
		})
	}
}

// benchClient sends one pre-built request at a time, as a board does.
type benchClient struct {
	addr  string
	req   []byte
	close bool
	conn  net.Conn
	br    *bufio.Reader
}

func (c *benchClient) do(b *testing.B) {
	if c.conn == nil {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			b.Fatal(err)
		}
		c.conn, c.br = conn, bufio.NewReaderSize(conn, 8<<10)
	}
	if _, err := c.conn.Write(c.req); err != nil {
		b.Fatal(err)
	}
	res, err := http.ReadResponse(c.br, nil)
	if err != nil {
		b.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	if res.StatusCode != 200 || n == 0 {
		b.Fatalf("got %d with %d bytes, want 200 with a body", res.StatusCode, n)
	}
	if c.close {
		c.end()
	}
}

func (c *benchClient) end() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}

// startBenchGateway serves a gateway like `picogate serve`'s defaults on a loopback port, forwarding to
// up with the transport client-go builds, and returns its address.
func startBenchGateway(b *testing.B, up benchUpstream, http2, accessLog bool) string {
	certFile, keyFile := writeClientCert(b)
	u, err := upstream.FromREST(&rest.Config{Host: up.url, TLSClientConfig: rest.TLSClientConfig{CAData: up.caPEM, CertFile: certFile, KeyFile: keyFile}},
		"bench", upstream.Config{HTTP2: http2})
	if err != nil {
		b.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(b.TempDir(), "access.log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = logFile.Close() })
	d := dev("pico-1", registry.AuthToken)
	g, err := New(Config{
		Upstream: u.URL, Transport: u.Transport, Registry: registryOf(d),
		Compact: true, AccessLog: accessLog, RingUserAgents: []string{DefaultRingUserAgent},
		DeviceRate: 1e9, DeviceBurst: 1 << 30,
		AccessLogWriter: logFile, // as picogate serve sets it: the text format, to stderr
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, ln, ServerConfig{}) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	return ln.Addr().String()
}

// writeClientCert writes a client certificate and key as files, as make bench's kubeconfig names them
// (so the gateway's credential is carried by the rotating transport, as there).
func writeClientCert(b *testing.B) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "picogate"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	certFile, keyFile = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		b.Fatal(err)
	}
	return certFile, keyFile
}

type benchUpstream struct {
	url   string
	caPEM []byte
}

// startBenchUpstream runs TestServeBenchUpstream in a child process (this test binary again) and reads
// its URL and certificate; the child ends when its standard input is closed. With
// PICOGATE_BENCH_UPSTREAM_AT set to the line such a process prints, that one is used instead: under
// valgrind, a child's exit signal can abort the run.
func startBenchUpstream(b *testing.B) benchUpstream {
	if line := os.Getenv("PICOGATE_BENCH_UPSTREAM_AT"); line != "" {
		up, ok := parseUpstreamLine(line)
		if !ok {
			b.Fatalf("PICOGATE_BENCH_UPSTREAM_AT: got %q, want the upstream process's line", line)
		}
		return up
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeBenchUpstream$")
	cmd.Env = append(os.Environ(), "PICOGATE_BENCH_UPSTREAM=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if up, ok := parseUpstreamLine(sc.Text()); ok {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return up
		}
	}
	b.Fatalf("the upstream process printed no address: %v", sc.Err())
	return benchUpstream{}
}

// parseUpstreamLine reads "upstream URL CERT" (CERT: base64 DER), as TestServeBenchUpstream prints it.
func parseUpstreamLine(line string) (benchUpstream, bool) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "upstream" {
		return benchUpstream{}, false
	}
	der, err := base64.StdEncoding.DecodeString(f[2])
	if err != nil {
		return benchUpstream{}, false
	}
	return benchUpstream{url: f[1], caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, true
}

// TestServeBenchUpstream is BenchmarkServe's upstream, run in its own process: it answers every GET
// and PATCH with a Node recorded from a real API server, with the API server's headers, over TLS with
// HTTP/2 and HTTP/1.1, until its standard input closes.
func TestServeBenchUpstream(t *testing.T) {
	if os.Getenv("PICOGATE_BENCH_UPSTREAM") == "" {
		t.Skip("BenchmarkServe's upstream process")
	}
	node, err := os.ReadFile(filepath.Join("..", "compact", "testdata", "node-get.input.json"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h.Set("Audit-Id", "4a4d2f5e-3c8b-4f43-9d7e-1a2b3c4d5e6f")
		h.Set("Cache-Control", "no-cache, private")
		h.Set("Content-Type", "application/json")
		h.Set("X-Kubernetes-Pf-Flowschema-Uid", "0c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f")
		h.Set("X-Kubernetes-Pf-Prioritylevel-Uid", "1c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f")
		_, _ = w.Write(node)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	if _, err := x509.ParseCertificate(srv.Certificate().Raw); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("upstream %s %s\n", srv.URL, base64.StdEncoding.EncodeToString(srv.Certificate().Raw))
	_, _ = io.Copy(io.Discard, os.Stdin)
}
