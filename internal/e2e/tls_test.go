package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/picogate/picogate/device"
	"github.com/picogate/picogate/internal/devicetls"
	"github.com/picogate/picogate/internal/gatewaytest"
	"github.com/picogate/picogate/internal/sim"
)

// tlsServerName is the name the TLS port's certificate is issued for and every client checks.
const tlsServerName = "picogate.test"

// The suites and version an mbedtls board negotiates with the TLS port, as mbedtls names them.
const (
	mbedtlsVersion = "TLSv1.2"
	suiteChaCha    = "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256"
	suiteAESGCM    = "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"
)

// mbedtls's certificate verification flags (x509.h): what a board sees for a certificate it must refuse.
const (
	badcertCNMismatch = 0x04 // MBEDTLS_X509_BADCERT_CN_MISMATCH: not issued for the name the board connects to
	badcertNotTrusted = 0x08 // MBEDTLS_X509_BADCERT_NOT_TRUSTED: not signed by the CA the board pins
)

// tlsGateway is a gateway with its TLS port on, and the files of `picogate setup --tls`.
type tlsGateway struct {
	*gatewaytest.Gateway
	TLSAddr string
	Dir     string // ca.crt, tls.crt, tls.key, ticket.key
}

// setupTLS runs `picogate setup --tls` for the test's names and returns the folder it wrote.
func setupTLS(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	cmd := execPicogate(t, "setup", "--tls", "--tls-dir", dir, "--tls-san", tlsServerName, "--tls-san", "127.0.0.1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("picogate setup --tls: %v: %s", err, out)
	}
	return dir
}

// startTLSGateway starts a gateway with --tls-listen on the certificate setup --tls wrote.
func startTLSGateway(t testing.TB, start func(testing.TB, ...string) *gatewaytest.Gateway, args ...string) *tlsGateway {
	t.Helper()
	dir := setupTLS(t)
	addr := gatewaytest.FreeAddr(t)
	args = append([]string{"--tls-listen", addr, "--tls-cert", filepath.Join(dir, "tls.crt"), "--tls-key", filepath.Join(dir, "tls.key")}, args...)
	return &tlsGateway{Gateway: start(t, args...), TLSAddr: addr, Dir: dir}
}

// mbedtlsBuild is tools/mbedtls-client, built once per test process.
var mbedtlsBuild struct {
	once       sync.Once
	path, skip string
	err        error
}

// mbedtlsClient builds the mbedtls client against Debian's libmbedtls-dev (static, so its calloc and
// elliptic-curve calls can be counted); without a C compiler or the library the test is skipped.
func mbedtlsClient(t testing.TB) string {
	t.Helper()
	b := &mbedtlsBuild
	b.once.Do(func() { b.path, b.skip, b.err = buildMbedtlsClient() })
	if b.skip != "" {
		t.Skip(b.skip)
	}
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func buildMbedtlsClient() (path, skip string, err error) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		return "", "no C compiler (cc): the mbedtls client is not built (Debian: apt-get install gcc)", nil
	}
	root, err := gatewaytest.ModuleRoot()
	if err != nil {
		return "", "", err
	}
	dir, err := os.MkdirTemp("", "mbedtls-client-")
	if err != nil {
		return "", "", err
	}
	libs := []string{"-l:libmbedtls.a", "-l:libmbedx509.a", "-l:libmbedcrypto.a", "-lpthread"}
	probe := filepath.Join(dir, "probe.c")
	if err := os.WriteFile(probe, []byte("#include \"mbedtls/ssl.h\"\n#include \"mbedtls/version.h\"\nint main(void) { mbedtls_ssl_context s; mbedtls_ssl_init(&s); return MBEDTLS_VERSION_NUMBER < 0x021C0000; }\n"), 0o644); err != nil {
		return "", "", err
	}
	if out, err := exec.Command(cc, append([]string{"-o", filepath.Join(dir, "probe"), probe}, libs...)...).CombinedOutput(); err != nil {
		return "", fmt.Sprintf("mbedtls 2.28 static libraries not found (Debian's libmbedtls-dev; scripts/install-test-deps.sh installs it): the mbedtls client is not built\n%s", out), nil
	}
	if err := exec.Command(filepath.Join(dir, "probe")).Run(); err != nil {
		return "", "mbedtls older than 2.28: the mbedtls client is not built", nil
	}
	bin := filepath.Join(dir, "mbedtls-client")
	args := append([]string{"-std=c99", "-D_POSIX_C_SOURCE=200809L", "-O2", "-Wall", "-Wextra", "-Werror", "-o", bin,
		filepath.Join(root, "tools", "mbedtls-client", "client.c"),
		"-Wl,--wrap=calloc,--wrap=free,--wrap=mbedtls_ecp_mul_restartable,--wrap=mbedtls_ecp_muladd_restartable"}, libs...)
	if out, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("building tools/mbedtls-client: %v\n%s", err, out)
	}
	return bin, "", nil
}

// mbedtlsResult is one connection of the mbedtls client: its JSON line.
type mbedtlsResult struct {
	Conn            int     `json:"conn"`
	OK              bool    `json:"ok"`
	Stage           string  `json:"stage"`
	Error           string  `json:"error"`
	VerifyFlags     uint32  `json:"verify_flags"`
	Verify          string  `json:"verify"`
	Status          int     `json:"status"`
	Version         string  `json:"version"`
	Suite           string  `json:"suite"`
	Resumed         bool    `json:"resumed"`
	MFLAcknowledged bool    `json:"mfl_acknowledged"`
	HandshakeMS     float64 `json:"hs_ms"`
	HSBytesOut      int     `json:"hs_bytes_out"`
	HSBytesIn       int     `json:"hs_bytes_in"`
	HSRoundTrips    int     `json:"hs_round_trips"`
	BytesOut        int     `json:"bytes_out"`
	BytesIn         int     `json:"bytes_in"`
	RoundTrips      int     `json:"round_trips"`
	MaxHSRecord     int     `json:"max_handshake_record"`
	MaxAppRecord    int     `json:"max_app_record"`
	ECPMul          int     `json:"hs_ecp_mul"`
	ECDSAVerify     int     `json:"hs_ecdsa_verify"`
	PKMS            float64 `json:"hs_pk_ms"`
	HeapBase        int     `json:"heap_base"`
	HSHeapPeak      int     `json:"hs_heap_peak"`
	HeapPeak        int     `json:"heap_peak"`
	RecordBuffers   int     `json:"heap_record_buffers"`
	response        firmwareResponse
}

// tlsRequest is one request as the reference firmware writes it (firmwareDo's bytes): HTTP/1.1,
// its header order, Connection: close, extra the credential's header line.
type tlsRequest struct{ method, path, ctype, body, extra string }

func (r tlsRequest) bytes() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s:6080\r\nUser-Agent: k3s-pico-node/1.0\r\nAccept: application/json\r\nConnection: close\r\n", r.method, r.path, tlsServerName)
	if r.extra != "" {
		b.WriteString(r.extra + "\r\n")
	}
	if r.body != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\nContent-Length: %d\r\n", r.ctype, len(r.body))
	}
	b.WriteString("\r\n" + r.body)
	return b.Bytes()
}

// runMbedtls runs the mbedtls client: one connection per request, each resuming the one before.
// args override its options (--ca, --servername, --suites, --curves, --max-record).
func runMbedtls(t testing.TB, gw *tlsGateway, reqs []tlsRequest, args ...string) []mbedtlsResult {
	t.Helper()
	bin := mbedtlsClient(t)
	dir := t.TempDir()
	host, port, _ := net.SplitHostPort(gw.TLSAddr)
	opts := map[string]string{"--host": host, "--port": port, "--ca": filepath.Join(gw.Dir, "ca.crt"), "--servername": tlsServerName, "--out": dir}
	for i := 0; i+1 < len(args); i += 2 {
		opts[args[i]] = args[i+1]
	}
	var argv []string
	for k, v := range opts {
		argv = append(argv, k, v)
	}
	for i, r := range reqs {
		file := filepath.Join(dir, "req-"+strconv.Itoa(i+1))
		if err := os.WriteFile(file, r.bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		argv = append(argv, "--request", file)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, argv...)
	cmd.Stderr = &stderr
	out, _ := cmd.Output() // a refused connection exits 1; its JSON line says why
	var res []mbedtlsResult
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r mbedtlsResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("mbedtls client output %q: %v (stderr %s)", sc.Text(), err, stderr.String())
		}
		if r.OK {
			raw, err := os.ReadFile(filepath.Join(dir, "resp-"+strconv.Itoa(r.Conn)))
			if err != nil {
				t.Fatal(err)
			}
			r.response = parseResponse(raw)
			if r.response.overflow = len(raw) > 4095; r.response.overflow {
				r.response.raw = raw[:4095]
			}
		}
		res = append(res, r)
	}
	if len(res) != len(reqs) {
		t.Fatalf("mbedtls client: got %d results for %d requests; output %s, stderr %s", len(res), len(reqs), out, stderr.String())
	}
	return res
}

// tlsMetric reads one picogate_tls_handshakes_total series from the admin port.
func tlsMetric(t testing.TB, gw *tlsGateway, result string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + gw.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	prefix := `picogate_tls_handshakes_total{result="` + result + `"} `
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("metrics: no %s", prefix)
	return 0
}

// TestTLSMbedtlsFirmwareSequence is the reference firmware's sequence over the TLS port, from a client
// configured as a Pico W firmware configures mbedtls: the pinned CA, no client certificate, the
// ECDHE-ECDSA AEAD suites, tickets, and an input buffer of --tls-record-bytes (2048). Each request is a
// new connection, as the firmware makes them: the first does the full handshake, every later one
// resumes its session without public-key work.
func TestTLSMbedtlsFirmwareSequence(t *testing.T) {
	mbedtlsClient(t)
	gw := startTLSGateway(t, startGateway)
	const name = "fw-tls-1"
	cred := addDevice(t, name)
	reqs := []tlsRequest{
		{"POST", "/api/v1/nodes", "application/json", firmwareNode(t, name, "127.0.0.1"), cred.Header},
		{"PATCH", "/api/v1/nodes/" + name + "/status", "application/strategic-merge-patch+json", firmwareHeartbeat("127.0.0.1"), cred.Header},
		{"PATCH", "/api/v1/nodes/" + name + "/status", "application/strategic-merge-patch+json", firmwareHeartbeat("127.0.0.1"), cred.Header},
		{"GET", "/api/v1/namespaces/default/configmaps/pico-config", "", "", cred.Header},
		{"GET", "/api/v1/nodes/" + name, "", "", cred.Header},
	}
	res := runMbedtls(t, gw, reqs, "--max-record", strconv.Itoa(devicetls.DefaultMaxRecordBytes), "--mfl", "2048")
	for i, r := range res {
		want := 200
		if i == 0 {
			want = 201
		}
		if !r.OK || r.Status != want {
			t.Fatalf("connection %d (%s %s): got ok %v status %d %s %s, want %d", r.Conn, reqs[i].method, reqs[i].path, r.OK, r.Status, r.Error, r.Verify, want)
		}
		checkFirmwareFits(t, reqs[i].method+" "+reqs[i].path, r.response)
		if r.Version != mbedtlsVersion || r.Suite != suiteChaCha {
			t.Errorf("connection %d: got %s %s, want %s %s (the board lists ChaCha20-Poly1305 first)", r.Conn, r.Version, r.Suite, mbedtlsVersion, suiteChaCha)
		}
		if r.MFLAcknowledged {
			t.Errorf("connection %d: the gateway acknowledged max_fragment_length; Go's crypto/tls was not known to", r.Conn)
		}
		if r.MaxAppRecord > devicetls.DefaultMaxRecordBytes {
			t.Errorf("connection %d: got a %d-byte record, want at most %d", r.Conn, r.MaxAppRecord, devicetls.DefaultMaxRecordBytes)
		}
		full := i == 0
		if r.Resumed == full {
			t.Errorf("connection %d: got resumed %v, want %v", r.Conn, r.Resumed, !full)
		}
		wantPK, wantVerify, wantRTT := 0, 0, 1
		if full {
			// ECDHE: one multiplication for the board's key share, one for the shared secret; ECDSA:
			// the leaf's signature by the CA and the server's signature over the key exchange.
			wantPK, wantVerify, wantRTT = 2, 2, 2
		}
		if r.ECPMul != wantPK || r.ECDSAVerify != wantVerify || r.HSRoundTrips != wantRTT {
			t.Errorf("connection %d: got %d ECDH multiplications, %d ECDSA verifications, %d round trips; want %d, %d, %d",
				r.Conn, r.ECPMul, r.ECDSAVerify, r.HSRoundTrips, wantPK, wantVerify, wantRTT)
		}
		t.Logf("conn %d %-5s %-45s %s resumed=%v handshake out/in %d/%d B, %d RTT, %d+%d EC ops (%.1f ms on this host); request out/in %d/%d B; largest record in: handshake %d, data %d; heap peak %d B (%d in the two 16 KiB record buffers)",
			r.Conn, reqs[i].method, reqs[i].path, r.Suite, r.Resumed, r.HSBytesOut, r.HSBytesIn, r.HSRoundTrips, r.ECPMul, r.ECDSAVerify, r.PKMS,
			r.BytesOut-r.HSBytesOut, r.BytesIn-r.HSBytesIn, r.MaxHSRecord, r.MaxAppRecord, r.HeapPeak, r.RecordBuffers)
	}
	if !strings.Contains(res[3].response.body, `"memory_values"`) {
		t.Errorf("GET configmap over TLS: got %s, want data.memory_values", res[3].response.body)
	}
	n, err := admin(cluster(t)).CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("node registered over TLS: %v", err)
	}
	if len(n.Status.Conditions) != 5 {
		t.Errorf("got %d conditions, want the firmware's 5", len(n.Status.Conditions))
	}
	if full, resumed := tlsMetric(t, gw, "full"), tlsMetric(t, gw, "resumed"); full != 1 || resumed != 4 {
		t.Errorf("gateway metrics: got %v full and %v resumed handshakes, want 1 and 4", full, resumed)
	}
}

// TestTLSMbedtlsSuitesAndRefusals: each offered suite and key exchange works alone; a board refuses
// a gateway whose certificate is not its CA's or not for its name, and a record larger than its buffer.
func TestTLSMbedtlsSuitesAndRefusals(t *testing.T) {
	mbedtlsClient(t)
	gw := startTLSGateway(t, startGateway)
	const name = "fw-tls-2"
	cred := addDevice(t, name)
	firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, name, "127.0.0.1"), cred.Header)
	get := []tlsRequest{{"GET", "/api/v1/nodes/" + name, "", "", cred.Header}}
	other := setupTLS(t) // another CA, and a certificate for the same names signed by it
	for _, tc := range []struct {
		name     string
		args     []string
		suite    string
		flags    uint32 // verification flags the board must report; 0: success
		errorHas string
	}{
		{"AES-128-GCM only", []string{"--suites", "aes"}, suiteAESGCM, 0, ""},
		{"ChaCha20-Poly1305 only", []string{"--suites", "chacha"}, suiteChaCha, 0, ""},
		{"AES first", []string{"--suites", "aes,chacha"}, suiteAESGCM, 0, ""},
		{"P-256 key exchange", []string{"--curves", "p256"}, suiteChaCha, 0, ""},
		{"another CA pinned", []string{"--ca", filepath.Join(other, "ca.crt")}, "", badcertNotTrusted, "verification failed"},
		{"another name", []string{"--servername", "gateway.example"}, "", badcertCNMismatch, "verification failed"},
		{"records larger than the buffer", []string{"--max-record", "1024"}, "", 0, "over the 1024-byte input buffer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runMbedtls(t, gw, get, tc.args...)[0]
			if tc.errorHas == "" {
				if !r.OK || r.Status != 200 || r.Suite != tc.suite {
					t.Fatalf("got ok %v status %d suite %s (%s), want 200 over %s", r.OK, r.Status, r.Suite, r.Error, tc.suite)
				}
				return
			}
			if r.OK || !strings.Contains(r.Error, tc.errorHas) || r.VerifyFlags&tc.flags != tc.flags {
				t.Fatalf("got ok %v stage %s error %q flags %#x (%s), want a refusal containing %q with flags %#x", r.OK, r.Stage, r.Error, r.VerifyFlags, r.Verify, tc.errorHas, tc.flags)
			}
			t.Logf("refused: %s %s", r.Error, r.Verify)
		})
	}
	// The boards that refused the certificate sent nothing: the gateway counts their handshakes failed.
	if failed := tlsMetric(t, gw, "failed"); failed < 2 {
		t.Errorf("gateway metrics: got %v failed handshakes, want at least the 2 refused certificates", failed)
	}
}

// goTLSClient is a Go client of the TLS port with the CA pinned, TLS 1.3.
func goTLSClient(t testing.TB, gw *tlsGateway) *tls.Config {
	t.Helper()
	ca, err := os.ReadFile(filepath.Join(gw.Dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := device.PinnedTLS(ca, tlsServerName)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MinVersion = tls.VersionTLS13
	return cfg
}

// tlsDo sends one firmware request over a new TLS connection and reads the whole answer.
func tlsDo(t testing.TB, gw *tlsGateway, cfg *tls.Config, r tlsRequest) (firmwareResponse, tls.ConnectionState) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", gw.TLSAddr, cfg)
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := conn.Write(r.bytes()); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return parseResponse(all), conn.ConnectionState()
}

// TestTLSGoClient13: a Go client over TLS 1.3 gets exactly what the plain port gives: the firmware's
// requests, the policy's refusals, a watch streamed event by event; and resumes its session.
func TestTLSGoClient13(t *testing.T) {
	gw := startTLSGateway(t, startGateway)
	const name = "go-tls-1"
	cred := addDevice(t, name)
	cfg := goTLSClient(t, gw)
	r, st := tlsDo(t, gw, cfg, tlsRequest{"POST", "/api/v1/nodes", "application/json", firmwareNode(t, name, "127.0.0.1"), cred.Header})
	if r.code != 201 {
		t.Fatalf("POST node over TLS 1.3: got %d %s, want 201", r.code, r.body)
	}
	if st.Version != tls.VersionTLS13 || st.CipherSuite != tls.TLS_AES_128_GCM_SHA256 || st.CurveID != tls.X25519 || st.DidResume {
		t.Errorf("first connection: got %s %s %s resumed %v, want TLS 1.3 TLS_AES_128_GCM_SHA256 X25519, full", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.CurveID, st.DidResume)
	}
	r, st = tlsDo(t, gw, cfg, tlsRequest{"PATCH", "/api/v1/nodes/" + name + "/status", "application/strategic-merge-patch+json", firmwareHeartbeat("127.0.0.1"), cred.Header})
	if r.code != 200 || !st.DidResume {
		t.Errorf("PATCH status: got %d resumed %v, want 200 on a resumed session", r.code, st.DidResume)
	}
	checkFirmwareFits(t, "PATCH status over TLS", r)
	if r, _ := tlsDo(t, gw, cfg, tlsRequest{"GET", "/api/v1/nodes/fw-shared-1", "", "", cred.Header}); r.code != 403 {
		t.Errorf("GET another node over TLS: got %d, want 403 from the policy", r.code)
	}
	if r, _ := tlsDo(t, gw, cfg, tlsRequest{"GET", "/api/v1/nodes/" + name, "", "", "Authorization: Bearer pgt_wrong"}); r.code != 401 {
		t.Errorf("a wrong token over TLS: got %d, want 401", r.code)
	}

	// A watch of the pods bound to the device: the pod arrives as an event on the open connection.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "tls-watched", Namespace: "default"},
		Spec:       corev1.PodSpec{NodeName: name, Containers: []corev1.Container{{Name: "c", Image: "picogate.io/apps/blink"}}},
	}
	if _, err := admin(cluster(t)).CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", gw.TLSAddr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	fmt.Fprintf(conn, "GET /api/v1/pods?watch=1&fieldSelector=spec.nodeName%%3D%s HTTP/1.1\r\nHost: %s\r\n%s\r\n\r\n", name, tlsServerName, cred.Header)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("watch over TLS: got %v %v, want 200", resp, err)
	}
	var ev struct {
		Type   string
		Object corev1.Pod
	}
	if err := json.NewDecoder(resp.Body).Decode(&ev); err != nil || ev.Type != "ADDED" || ev.Object.Name != pod.Name {
		t.Errorf("watch over TLS: got %s %s (%v), want ADDED %s", ev.Type, ev.Object.Name, err, pod.Name)
	}
}

// TestTLSSourceRefusedBeforeHandshake: a client outside --allow-cidr is closed on accept, before any
// TLS: no ServerHello, no handshake work.
func TestTLSSourceRefusedBeforeHandshake(t *testing.T) {
	gw := startTLSGateway(t, startGateway, "--allow-cidr", "10.0.0.0/8")
	raw, err := net.Dial("tcp", gw.TLSAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := raw.Read(make([]byte, 1)); n != 0 || err == nil || os.IsTimeout(err) {
		t.Errorf("TCP connection from outside the allowlist: got %d bytes, %v; want it closed at once", n, err)
	}
	if _, err := tls.Dial("tcp", gw.TLSAddr, goTLSClient(t, gw)); err == nil {
		t.Error("TLS handshake from outside the allowlist: got success")
	}
	if refused, done := tlsMetric(t, gw, "refused"), tlsMetric(t, gw, "full")+tlsMetric(t, gw, "failed"); refused != 2 || done != 0 {
		t.Errorf("gateway metrics: got %v refused and %v handshakes, want 2 and 0", refused, done)
	}
}

// TestTLSPicosim: the simulator's boards over the TLS port with the CA pinned: enrollment with key
// agreement and the device package's agent (hmac, over TLS 1.3), and the firmware emulation.
func TestTLSPicosim(t *testing.T) {
	gw := startTLSGateway(t, startEnrollmentGateway)
	ca, err := os.ReadFile(filepath.Join(gw.Dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := device.PinnedTLS(ca, tlsServerName)
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + gw.TLSAddr
	tok := createToken(t, "--ttl", "10m", "--uses", "1", "--prefix", "simtls-")
	fw := addDevice(t, "simtls-fw-1")
	runs := map[string]sim.Config{
		"enrolled agent": {Gateway: url, TLS: pinned, Enrollment: &sim.Enrollment{Token: tok.Token, GatewayKey: gatewayPublicKey(t), Count: 1, Prefix: "simtls-"}},
		"firmware":       {Gateway: url, TLS: pinned, Mode: sim.ModeFirmware, Credentials: []sim.Credential{{Name: fw.Name, Auth: fw.Auth, Token: fw.Token}}, FirmwareStatusInterval: 300 * time.Millisecond, FirmwareConfigInterval: 500 * time.Millisecond},
	}
	reports := map[string]*sim.Report{}
	var mu sync.Mutex
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for what, cfg := range runs {
		s, err := sim.New(cfg)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		wg.Go(func() {
			rep, err := s.Run(ctx)
			if err != nil {
				t.Errorf("%s: %v", what, err)
			}
			mu.Lock()
			reports[what] = rep
			mu.Unlock()
		})
	}
	nodes := admin(cluster(t)).CoreV1().Nodes()
	ready := func(name string) bool {
		n, err := nodes.Get(context.Background(), name, metav1.GetOptions{})
		return err == nil && condition(n, corev1.NodeReady).Status == corev1.ConditionTrue
	}
	ok := gatewaytest.WaitFor(ctx, 30*time.Second, func() bool { return ready("simtls-1") && ready("simtls-fw-1") })
	cancel()
	wg.Wait()
	if !ok {
		t.Fatalf("boards over TLS not Ready within 30s; reports %+v %+v", reports["enrolled agent"], reports["firmware"])
	}
	for what, rep := range reports {
		if rep.Requests == 0 || len(rep.Errors) != 0 {
			t.Errorf("%s over TLS: got %d requests, errors %v; want requests and no errors", what, rep.Requests, rep.Errors)
		}
	}
	if rep := reports["enrolled agent"]; rep.Enrolled != 1 {
		t.Errorf("enrolled agent over TLS: got %d enrolled, want 1", rep.Enrolled)
	}
	if resumed := tlsMetric(t, gw, "resumed"); resumed == 0 {
		t.Error("gateway metrics: no resumed handshake, want the boards to resume their sessions")
	}
}

// TestKustomizeTLSOverlay: the TLS overlay adds the TLS port to the base and changes nothing else —
// every replica mounts the same Secret (readable by the gateway's group only), the Service and the
// NetworkPolicy open 6084 — and the API server accepts it.
func TestKustomizeTLSOverlay(t *testing.T) {
	manifest, objs := render(t, "deploy/kubernetes/overlays/tls")
	_, base := render(t, "deploy/kubernetes/base")
	if len(objs) != len(base) {
		t.Fatalf("got %d objects, want the base's %d", len(objs), len(base))
	}
	for k, o := range base {
		if k != "Deployment picogate" && k != "Service picogate" && k != "NetworkPolicy picogate" && !reflect.DeepEqual(objs[k].Object, o.Object) {
			t.Errorf("%s differs from the base", k)
		}
	}
	d := typed[appsv1.Deployment](t, objs["Deployment picogate"])
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	for _, want := range []string{"--tls-listen=:6084", "--tls-cert=/etc/picogate/tls/tls.crt", "--tls-key=/etc/picogate/tls/tls.key", "--tls-ticket-key-file=/etc/picogate/tls/ticket.key"} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("args: got %v, want %s", c.Args, want)
		}
	}
	if len(spec.Volumes) != 1 || spec.Volumes[0].Secret == nil || spec.Volumes[0].Secret.SecretName != "picogate-tls" ||
		spec.Volumes[0].Secret.DefaultMode == nil || *spec.Volumes[0].Secret.DefaultMode != 0o440 {
		t.Errorf("volumes: got %+v, want the Secret picogate-tls, mode 0440", spec.Volumes)
	}
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/etc/picogate/tls" || !c.VolumeMounts[0].ReadOnly || c.VolumeMounts[0].SubPath != "" {
		t.Errorf("volumeMounts: got %+v, want /etc/picogate/tls read-only, without subPath (kubelet refreshes it)", c.VolumeMounts)
	}
	if sc := spec.SecurityContext; sc.FSGroup == nil || sc.RunAsGroup == nil || *sc.FSGroup != *sc.RunAsGroup {
		t.Errorf("pod securityContext: got %+v, want fsGroup equal to the gateway's group", sc)
	}
	svc := typed[corev1.Service](t, objs["Service picogate"])
	if len(svc.Spec.Ports) != 2 || svc.Spec.Ports[1].Port != 6084 || svc.Spec.Ports[1].TargetPort.StrVal != "devices-tls" {
		t.Errorf("service ports: got %+v, want 6080 and 6084 → devices-tls", svc.Spec.Ports)
	}
	if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "devices-tls" && p.ContainerPort == 6084 }) {
		t.Errorf("container ports: got %+v, want devices-tls 6084", c.Ports)
	}
	np := typed[networkingv1.NetworkPolicy](t, objs["NetworkPolicy picogate"])
	if ports := np.Spec.Ingress[0].Ports; len(ports) != 2 || ports[1].Port.StrVal != "devices-tls" || len(np.Spec.Ingress[0].From) != 0 {
		t.Errorf("network policy: got %+v, want devices and devices-tls open to all", np.Spec.Ingress[0])
	}
	ensureRegistryNamespace(t)
	if out, err := dryRunApply(t, manifest); err != nil {
		t.Fatalf("server-side dry run: %v: %s", err, out)
	}
}

// TestTLSBadStartup: a TLS port that cannot serve stops `picogate serve` before it serves anything, with
// one error line saying why; --tls-* flags without --tls-listen are refused rather than ignored.
func TestTLSBadStartup(t *testing.T) {
	dir := setupTLS(t)
	kubeconfig := cluster(t).AdminKubeconfig()
	serve := []string{"serve", "--kubeconfig", kubeconfig, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"TLS flag without the port", []string{"--tls-cert", filepath.Join(dir, "tls.crt")}, "set --tls-listen too"},
		{"missing certificate", []string{"--tls-listen", "127.0.0.1:0", "--tls-cert", "/nonexistent/tls.crt"}, "--tls-cert"},
		{"key of another certificate", []string{"--tls-listen", "127.0.0.1:0", "--tls-cert", filepath.Join(dir, "tls.crt"), "--tls-key", filepath.Join(dir, "ca.key")}, "private key does not match"},
		{"record size", []string{"--tls-listen", "127.0.0.1:0", "--tls-cert", filepath.Join(dir, "tls.crt"), "--tls-key", filepath.Join(dir, "tls.key"), "--tls-record-bytes", "100"}, "--tls-record-bytes 100"},
		{"short ticket seed", []string{"--tls-listen", "127.0.0.1:0", "--tls-cert", filepath.Join(dir, "tls.crt"), "--tls-key", filepath.Join(dir, "tls.key"), "--tls-ticket-key-file", "/dev/null"}, "at least 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := execPicogate(t, append(serve, tc.args...)...).CombinedOutput()
			if err == nil {
				t.Fatalf("got exit 0, want non-zero")
			}
			// The error is one line; the gateway may have logged what it built before.
			var errs []string
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if strings.HasPrefix(l, "picogate: ") {
					errs = append(errs, l)
				}
			}
			if len(errs) != 1 || !strings.Contains(errs[0], tc.want) {
				t.Errorf("got %q, want one error line mentioning %q", out, tc.want)
			}
		})
	}
}
