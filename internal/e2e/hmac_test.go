package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/gatewaytest"
)

// TestSignedReplayAndTampering captures one signed status PATCH and sends it again, and altered, as an
// attacker on the LAN would. Only the original may reach the API server (counted from its audit log).
func TestSignedReplayAndTampering(t *testing.T) {
	gw := startGateway(t)
	s := newSigner(t, "sig-1", addHMACDevice(t, "sig-1").Key)
	if !gatewaytest.WaitFor(context.Background(), 5*time.Second, func() bool { return s.do(t, gw.Addr, "GET", "/version", "", "").code == 200 }) {
		t.Fatal("hmac device not accepted within 5s")
	}
	if r := s.do(t, gw.Addr, "POST", "/api/v1/nodes", "application/json", firmwareNode(t, "sig-1", "127.0.0.1")); r.code != 201 {
		t.Fatalf("POST node: got %d %s", r.code, r.body)
	}
	const ctype = "application/strategic-merge-patch+json"
	path := "/api/v1/nodes/sig-1/status"
	body := firmwareHeartbeat("127.0.0.1")
	captured := s.header("PATCH", path, ctype, body)
	podsPath := "/api/v1/pods?fieldSelector=spec.nodeName%3Dsig-1"
	capturedGet := s.header("GET", podsPath, "", "")
	send := func(ua, method, target, hdr, ct, b string) firmwareResponse {
		headers := []string{hdr}
		if ct != "" {
			headers = append(headers, "Content-Type: "+ct)
		}
		return rawRequestTyped(t, gw.Addr, method, target, ua, headers, b)
	}
	tests := []struct {
		name, method, target, hdr, ctype, body string
		code                                   int
		msg                                    string
		reaches                                bool
	}{
		{"original", "PATCH", path, captured, ctype, body, 200, "", true},
		{"replayed", "PATCH", path, captured, ctype, body, 401, "nonce already used", false},
		{"tampered body", "PATCH", path, captured, ctype, strings.Replace(body, `"True"`, `"False"`, 1), 401, "authentication required", false},
		{"tampered path", "PATCH", "/api/v1/nodes/sig-2/status", captured, ctype, body, 401, "authentication required", false},
		{"tampered content type", "PATCH", path, captured, "application/merge-patch+json", body, 401, "authentication required", false},
		{"original GET", "GET", podsPath, capturedGet, "", "", 200, "", true},
		{"tampered query", "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dsig-1&watch=1", capturedGet, "", "", 401, "authentication required", false},
		{"tampered method", "DELETE", podsPath, capturedGet, "", "", 401, "authentication required", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := send(fmt.Sprintf("sig-tamper-%02d", i), tt.method, tt.target, tt.hdr, tt.ctype, tt.body)
			if r.code != tt.code || !strings.Contains(r.body, tt.msg) {
				t.Errorf("got %d %s, want %d mentioning %q", r.code, trim(r.body), tt.code, tt.msg)
			}
		})
	}
	audited := auditedUserAgents(t)
	for i, tt := range tests {
		if got := audited[fmt.Sprintf("sig-tamper-%02d", i)] > 0; got != tt.reaches {
			t.Errorf("%s: reached the API server: got %v, want %v", tt.name, got, tt.reaches)
		}
	}
}

// rawRequestTyped sends one request on a new connection with the given User-Agent (the audit log marker),
// header lines (a Content-Type among them) and body, and reads the whole response.
func rawRequestTyped(t testing.TB, addr, method, target, ua string, headers []string, body string) firmwareResponse {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: picogate\r\nUser-Agent: %s\r\nConnection: close\r\n", method, target, ua)
	for _, h := range headers {
		req.WriteString(h + "\r\n")
	}
	if body != "" {
		fmt.Fprintf(&req, "Content-Length: %d\r\n", len(body))
	}
	req.WriteString("\r\n" + body)
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	_, _ = conn.Write(req.Bytes())
	all, _ := io.ReadAll(conn)
	return parseResponse(all)
}

// TestSignedClockSkew: a timestamp just inside the ±30 s window is accepted, just outside refused with a
// message that says how to fix the clock; GET /picogate/v1/time gives the gateway's time.
func TestSignedClockSkew(t *testing.T) {
	gw := startGateway(t)
	s := newSigner(t, "skew-1", addHMACDevice(t, "skew-1").Key)
	if !gatewaytest.WaitFor(context.Background(), 5*time.Second, func() bool { return s.do(t, gw.Addr, "GET", "/version", "", "").code == 200 }) {
		t.Fatal("hmac device not accepted within 5s")
	}
	r := firmwareDo(t, gw.Addr, "", "GET", "/picogate/v1/time", "", "", "")
	var tm struct{ Unix, Window int64 }
	if r.code != 200 || json.Unmarshal([]byte(r.body), &tm) != nil || tm.Window != 30 {
		t.Fatalf("GET /picogate/v1/time: got %d %q, want the gateway's time and window 30", r.code, r.body)
	}
	if d := time.Now().Unix() - tm.Unix; d < -2 || d > 2 {
		t.Errorf("gateway time %d is %ds from this clock", tm.Unix, d)
	}
	checkFirmwareFits(t, "GET /picogate/v1/time", r)
	// The same machine: the gateway's clock is ours. 29 s stays inside the window even if a second
	// ticks between signing and checking; 31 s is outside for the same reason.
	for _, tt := range []struct {
		skew time.Duration
		code int
	}{{-29 * time.Second, 200}, {29 * time.Second, 200}, {-31 * time.Second, 401}, {31 * time.Second, 401}, {-10 * time.Minute, 401}} {
		t.Run(tt.skew.String(), func(t *testing.T) {
			s.skew = tt.skew
			r := s.do(t, gw.Addr, "GET", "/api/v1/nodes/skew-1", "", "")
			if r.code == 404 { // the node does not exist: authentication passed
				r.code = 200
			}
			if r.code != tt.code {
				t.Fatalf("skew %v: got %d %s, want %d", tt.skew, r.code, trim(r.body), tt.code)
			}
			if tt.code == 401 && (!strings.Contains(r.body, "from the gateway's clock") || !strings.Contains(r.body, "/picogate/v1/time")) {
				t.Errorf("skew %v: got %s, want the clock named and how to fix it", tt.skew, r.body)
			}
			if tt.code == 401 && r.headers["date"] == "" {
				t.Errorf("skew %v: got no Date header to set the clock from", tt.skew)
			}
		})
	}
}

// TestRequireHMAC: with --require-hmac a token device is refused with a clear 401, an hmac device works.
func TestRequireHMAC(t *testing.T) {
	gw := startGateway(t, "--require-hmac")
	tok := addDevice(t, "req-tok-1")
	s := newSigner(t, "req-hmac-1", addHMACDevice(t, "req-hmac-1").Key)
	if !gatewaytest.WaitFor(context.Background(), 5*time.Second, func() bool { return s.do(t, gw.Addr, "GET", "/version", "", "").code == 200 }) {
		t.Fatal("hmac device not accepted within 5s")
	}
	r := firmwareDo(t, gw.Addr, "", "GET", "/version", "", "", tok.Header)
	if r.code != 401 || !strings.Contains(r.body, "requires signed requests") {
		t.Errorf("token device: got %d %s, want 401 saying signed requests are required", r.code, r.body)
	}
	if r := firmwareDo(t, gw.Addr, "", "GET", "/version", "", "", ""); r.code != 401 {
		t.Errorf("no credential: got %d, want 401", r.code)
	}
	signedFirmwareSequence(t, gw.Addr, s)
	// The firmware's request must still fit its 2048-byte buffer with the longer header.
	if n := len(s.header("PATCH", "/api/v1/nodes/req-hmac-1/status", "application/strategic-merge-patch+json", firmwareHeartbeat("127.0.0.1"))); n > 200 {
		t.Errorf("signature header is %d bytes, want at most 200", n)
	}
}
