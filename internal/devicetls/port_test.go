package devicetls

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// testServerName is the name every test leaf is issued for and every test client checks.
const testServerName = "picogate.test"

// fixture is a CA and a leaf issued by it, written where a Port reads them.
type fixture struct {
	dir               string
	certFile, keyFile string
	ca                PEM
	pool              *x509.CertPool
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ca, err := NewCA("test device CA", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &fixture{dir: dir, certFile: filepath.Join(dir, "tls.crt"), keyFile: filepath.Join(dir, "tls.key"), ca: ca, pool: x509.NewCertPool()}
	f.pool.AppendCertsFromPEM(ca.Cert)
	f.issue(t)
	return f
}

// issue writes a new leaf for testServerName and 127.0.0.1, as setup does: each file replaced whole.
func (f *fixture) issue(t testing.TB) *x509.Certificate {
	t.Helper()
	leaf, err := IssueLeaf(f.ca, []string{testServerName, "127.0.0.1"}, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	writeReplace(t, f.keyFile, leaf.Key)
	writeReplace(t, f.certFile, leaf.Cert)
	return parseCert(t, leaf.Cert)
}

func writeReplace(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) config() Config {
	return Config{CertFile: f.certFile, KeyFile: f.keyFile, Allowed: func(netip.Addr) bool { return true }, Registerer: prometheus.NewRegistry()}
}

// clientConfig is a board's view: the CA pinned, the name checked, TLS 1.2 or 1.3.
func (f *fixture) clientConfig(version uint16) *tls.Config {
	return &tls.Config{RootCAs: f.pool, ServerName: testServerName, MinVersion: version, MaxVersion: version, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
}

// servePort serves handler on a new Port with cfg, on a loopback listener, until the test ends.
func servePort(t testing.TB, cfg Config, handler http.Handler) (*Port, string) {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if handler == nil {
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	tl := p.Listener(ln)
	go func() { _ = srv.Serve(tl) }()
	t.Cleanup(func() { srv.Close() })
	return p, ln.Addr().String()
}

// get makes one request on a new connection and returns its TLS state and body.
func get(t testing.TB, addr string, cfg *tls.Config, path string) (tls.ConnectionState, string) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: picogate\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(string(b), "\r\n\r\n")
	return conn.ConnectionState(), body
}

// value reads one counter or gauge.
func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func count(p *Port, result string) float64 {
	return value(p.metrics.handshakes.WithLabelValues(result))
}

func TestNegotiates(t *testing.T) {
	f := newFixture(t)
	_, addr := servePort(t, f.config(), nil)
	for _, tc := range []struct {
		name    string
		version uint16
		suites  []uint16
		curves  []tls.CurveID
		suite   uint16
		curve   tls.CurveID
	}{
		{"TLS 1.3", tls.VersionTLS13, nil, nil, tls.TLS_AES_128_GCM_SHA256, tls.X25519},
		{"TLS 1.2 AES-128-GCM", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, nil, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.X25519},
		{"TLS 1.2 ChaCha20-Poly1305", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}, nil, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.X25519},
		{"TLS 1.2 P-256 only", tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, []tls.CurveID{tls.CurveP256}, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.CurveP256},
		{"TLS 1.3 no hybrid share", tls.VersionTLS13, nil, []tls.CurveID{tls.X25519MLKEM768, tls.X25519}, tls.TLS_AES_128_GCM_SHA256, tls.X25519},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.clientConfig(tc.version)
			cfg.CipherSuites, cfg.CurvePreferences = tc.suites, tc.curves
			st, body := get(t, addr, cfg, "/")
			if st.Version != tc.version || body != "ok" {
				t.Errorf("got version %x body %q, want %x and ok", st.Version, body, tc.version)
			}
			if tc.version == tls.VersionTLS12 && st.CipherSuite != tc.suite {
				t.Errorf("got suite %s, want %s", tls.CipherSuiteName(st.CipherSuite), tls.CipherSuiteName(tc.suite))
			}
			if st.CurveID != tc.curve {
				t.Errorf("got key exchange %s, want %s", st.CurveID, tc.curve)
			}
		})
	}
}

func TestRefusesWeakerClients(t *testing.T) {
	f := newFixture(t)
	p, addr := servePort(t, f.config(), nil)
	for _, tc := range []struct {
		name string
		cfg  func(*tls.Config)
	}{
		{"TLS 1.1", func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }},
		{"CBC suite", func(c *tls.Config) {
			c.MaxVersion, c.CipherSuites = tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
		}},
		{"AES-256-GCM in TLS 1.2", func(c *tls.Config) {
			c.MaxVersion, c.CipherSuites = tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}
		}},
		{"P-384 only", func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.CurveP384} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.clientConfig(0)
			cfg.MinVersion = tls.VersionTLS10
			tc.cfg(cfg)
			if conn, err := tls.Dial("tcp", addr, cfg); err == nil {
				conn.Close()
				t.Fatalf("handshake: got %s, want a refusal", tls.CipherSuiteName(conn.ConnectionState().CipherSuite))
			}
		})
	}
	if got := count(p, ResultFull) + count(p, ResultResumed); got != 0 {
		t.Errorf("got %v handshakes done, want 0", got)
	}
}

func TestResumesWithTicket(t *testing.T) {
	f := newFixture(t)
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			p, addr := servePort(t, f.config(), nil)
			cfg := f.clientConfig(version)
			for i, want := range []bool{false, true, true} {
				if st, _ := get(t, addr, cfg, "/"); st.DidResume != want {
					t.Errorf("connection %d: got resumed %v, want %v", i, st.DidResume, want)
				}
			}
			if full, resumed := count(p, ResultFull), count(p, ResultResumed); full != 1 || resumed != 2 {
				t.Errorf("got %v full and %v resumed handshakes, want 1 and 2", full, resumed)
			}
		})
	}
}

func TestSharedTicketKeysResumeAcrossReplicas(t *testing.T) {
	f := newFixture(t)
	seed := filepath.Join(f.dir, "ticket.key")
	if err := os.WriteFile(seed, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 5, 1, 23, 59, 0, 0, time.UTC)
	replica := func(t *testing.T, seedFile string, now time.Time) string {
		cfg := f.config()
		cfg.TicketKeyFile, cfg.Now = seedFile, func() time.Time { return now }
		_, addr := servePort(t, cfg, nil)
		return addr
	}
	for _, tc := range []struct {
		name     string
		seedB    string
		nowB     time.Time
		resumed  bool
		noSeedOn bool
	}{
		{"same seed, same day", seed, day, true, false},
		{"same seed, next day", seed, day.Add(2 * time.Minute), true, false},
		{"same seed, replica a day behind", seed, day.Add(-24 * time.Hour), true, false},
		{"same seed, 8 days later", seed, day.Add(8 * 24 * time.Hour), false, false},
		{"each replica its own keys", "", day, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seedA := seed
			if tc.noSeedOn {
				seedA = ""
			}
			a, b := replica(t, seedA, day), replica(t, tc.seedB, tc.nowB)
			for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
				cfg := f.clientConfig(version)
				if st, _ := get(t, a, cfg, "/"); st.DidResume {
					t.Fatalf("%s: first connection resumed", tls.VersionName(version))
				}
				if st, _ := get(t, b, cfg, "/"); st.DidResume != tc.resumed {
					t.Errorf("%s on the other replica: got resumed %v, want %v", tls.VersionName(version), st.DidResume, tc.resumed)
				}
			}
		})
	}
}

func TestTicketSeedTooShort(t *testing.T) {
	f := newFixture(t)
	seed := filepath.Join(f.dir, "ticket.key")
	if err := os.WriteFile(seed, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := f.config()
	cfg.TicketKeyFile = seed
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Errorf("got %v, want an error asking for 32 bytes", err)
	}
}

func TestSourceRefusedBeforeHandshake(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.Allowed = func(a netip.Addr) bool { return !a.IsLoopback() }
	p, addr := servePort(t, cfg, nil)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// Nothing was sent: the port must close without waiting for a ClientHello.
	n, err := conn.Read(make([]byte, 1))
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: got %d bytes, %v; want the connection closed at once", n, err)
	}
	if _, err := tls.Dial("tcp", addr, f.clientConfig(tls.VersionTLS13)); err == nil {
		t.Fatal("TLS handshake from a refused source: got success")
	}
	if got, done := count(p, ResultRefused), count(p, ResultFull)+count(p, ResultFailed); got != 2 || done != 0 {
		t.Errorf("got %v refused and %v handshakes, want 2 and 0", got, done)
	}
}

func TestHandshakeTimeoutAndCap(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.MaxHandshakes, cfg.HandshakeTimeout = 1, 500*time.Millisecond
	p, addr := servePort(t, cfg, nil)
	// A client that connects and sends nothing holds the one handshake slot until the timeout.
	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	waitFor(t, "the stalled handshake to take the slot", func() bool { return value(p.metrics.inFlight) == 1 })
	start := time.Now()
	st, body := get(t, addr, f.clientConfig(tls.VersionTLS13), "/")
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("second handshake done after %s, want it to wait for the slot (about 500ms)", waited)
	}
	if body != "ok" || st.Version != tls.VersionTLS13 {
		t.Errorf("got %q over %x, want ok over TLS 1.3", body, st.Version)
	}
	if got := count(p, ResultTimeout); got != 1 {
		t.Errorf("got %v timeouts, want 1", got)
	}
	_ = stalled.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := stalled.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("stalled connection: got %d bytes, %v; want it closed", n, err)
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recordSizes reads TLS record headers off the wire of a client connection.
type recordSizes struct {
	net.Conn
	buf   []byte
	sizes map[byte][]int // record type → lengths, in order
}

func (r *recordSizes) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	r.buf = append(r.buf, b[:n]...)
	for len(r.buf) >= 5 {
		l := int(r.buf[3])<<8 | int(r.buf[4])
		if len(r.buf) < 5+l {
			break
		}
		r.sizes[r.buf[0]] = append(r.sizes[r.buf[0]], l)
		r.buf = r.buf[5+l:]
	}
	return n, err
}

func TestRecordsCapped(t *testing.T) {
	f := newFixture(t)
	body := strings.Repeat("x", 20000)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = io.WriteString(w, body)
	})
	const appData = 23
	for _, tc := range []struct {
		max     int
		version uint16
	}{{1024, tls.VersionTLS12}, {2048, tls.VersionTLS12}, {2048, tls.VersionTLS13}, {16384, tls.VersionTLS12}} {
		t.Run(tls.VersionName(tc.version)+" "+strconv.Itoa(tc.max), func(t *testing.T) {
			cfg := f.config()
			cfg.MaxRecordBytes = tc.max
			_, addr := servePort(t, cfg, handler)
			raw, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			rs := &recordSizes{Conn: raw, sizes: map[byte][]int{}}
			conn := tls.Client(rs, f.clientConfig(tc.version))
			defer conn.Close()
			_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: picogate\r\nConnection: close\r\n\r\n")
			all, err := io.ReadAll(conn)
			if err != nil || !strings.HasSuffix(string(all), body) {
				t.Fatalf("got %d bytes, %v; want the whole body", len(all), err)
			}
			// The AEAD adds its tag (and in TLS 1.2 an explicit nonce for GCM, in TLS 1.3 the content type).
			limit := tc.max + 8 + 16 + 1
			largest := 0
			for _, l := range rs.sizes[appData] {
				largest = max(largest, l)
			}
			if largest > limit {
				t.Errorf("got an application data record of %d bytes, want at most %d", largest, limit)
			}
			t.Logf("application data records: %v", rs.sizes[appData])
		})
	}
}

func TestCertificateReload(t *testing.T) {
	f := newFixture(t)
	p, addr := servePort(t, f.config(), nil)
	serial := func() *big.Int {
		st, _ := get(t, addr, f.clientConfig(tls.VersionTLS13), "/")
		return st.PeerCertificates[0].SerialNumber
	}
	first := serial()
	if err := p.Reload(); err != nil {
		t.Fatalf("reload without a change: %v", err)
	}
	if got := serial(); got.Cmp(first) != 0 {
		t.Fatalf("got serial %x without a change, want %x", got, first)
	}
	next := f.issue(t)
	if err := p.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if got := serial(); got.Cmp(next.SerialNumber) != 0 {
		t.Errorf("after rotation: got serial %x, want the new leaf's %x", got, next.SerialNumber)
	}
	if got := value(p.metrics.certExpiry); got != float64(next.NotAfter.Unix()) {
		t.Errorf("expiry metric: got %v, want %v", got, next.NotAfter.Unix())
	}
	// A key that does not match (written before its certificate) keeps the last good pair.
	other, err := IssueLeaf(f.ca, []string{testServerName}, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	writeReplace(t, f.keyFile, other.Key)
	if err := p.Reload(); err == nil {
		t.Fatal("reload of a mismatched pair: got no error")
	}
	if got := serial(); got.Cmp(next.SerialNumber) != 0 {
		t.Errorf("after a bad pair: got serial %x, want the last good %x", got, next.SerialNumber)
	}
	writeReplace(t, f.certFile, other.Cert)
	if err := p.Reload(); err != nil {
		t.Fatalf("reload once the pair matches: %v", err)
	}
	if got, want := serial(), parseCert(t, other.Cert).SerialNumber; got.Cmp(want) != 0 {
		t.Errorf("after the certificate followed: got serial %x, want %x", got, want)
	}
	if ok, bad := value(p.metrics.reloads.WithLabelValues("ok")), value(p.metrics.reloads.WithLabelValues("error")); ok != 2 || bad != 1 {
		t.Errorf("reloads: got %v ok, %v error; want 2 and 1", ok, bad)
	}
}

func TestRunReloads(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.ReloadInterval = 10 * time.Millisecond
	p, addr := servePort(t, cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	next := f.issue(t)
	waitFor(t, "Run to load the new certificate", func() bool {
		return value(p.metrics.reloads.WithLabelValues("ok")) == 1
	})
	if st, _ := get(t, addr, f.clientConfig(tls.VersionTLS12), "/"); st.PeerCertificates[0].SerialNumber.Cmp(next.SerialNumber) != 0 {
		t.Error("got the old certificate after Run reloaded")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: got %v, want nil once cancelled", err)
	}
}

func TestNewRefuses(t *testing.T) {
	f := newFixture(t)
	rsaDir := t.TempDir()
	rsaCert, rsaKey := writeRSAPair(t, rsaDir)
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"missing files", func(c *Config) { c.CertFile, c.KeyFile = "/nonexistent/tls.crt", "/nonexistent/tls.key" }, []string{"--tls-cert", "no such file"}},
		{"RSA key", func(c *Config) { c.CertFile, c.KeyFile = rsaCert, rsaKey }, []string{"needs ECDSA P-256"}},
		{"record size and handshakes", func(c *Config) { c.MaxRecordBytes, c.MaxHandshakes = 100, -1 }, []string{"--tls-record-bytes 100", "--tls-max-handshakes -1"}},
		{"no allowlist", func(c *Config) { c.Allowed = nil }, []string{"no source allowlist"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.config()
			tc.edit(&cfg)
			_, err := New(cfg)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("got %v, want an error containing %q", err, w)
				}
			}
		})
	}
}

func writeRSAPair(t *testing.T, dir string) (string, string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rsa"}, DNSNames: []string{"rsa.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "rsa.crt"), filepath.Join(dir, "rsa.key")
	writeReplace(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeReplace(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	return certFile, keyFile
}
