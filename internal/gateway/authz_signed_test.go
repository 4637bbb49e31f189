package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestSignedRefusalWaitsForSignature: on the whole request path, a signed request the policy refuses
// is answered 403 only when its signature holds. A forged or tampered one is 401 like every other
// authentication failure, whatever it asks for: it never learns what the device it names may do, is
// never logged as that device, and reaches nothing upstream.
func TestSignedRefusalWaitsForSignature(t *testing.T) {
	d := hmacDev("pico-z1")
	forger := sha256.Sum256([]byte("not the key"))
	const smp = "application/strategic-merge-patch+json"
	tests := []struct {
		name     string
		req      func() *http.Request
		want     int
		wantMsg  string
		identity string // the access log's identity
	}{
		{"signed, allowed (control)", func() *http.Request {
			return signed(t, d.Key, d.Name, "GET", "/api/v1/nodes/pico-z1", "", "", t0.Unix(), 1)
		}, 200, "", "system:node:pico-z1"},
		{"signed, another node", func() *http.Request {
			return signed(t, d.Key, d.Name, "GET", "/api/v1/nodes/pico-z2", "", "", t0.Unix(), 2)
		}, 403, "no rule allows GET /api/v1/nodes/pico-z2", "system:node:pico-z1"},
		{"signed, an upgrade", func() *http.Request {
			r := signed(t, d.Key, d.Name, "GET", "/api/v1/nodes/pico-z1", "", "", t0.Unix(), 3)
			r.Header.Set("Upgrade", "SPDY/3.1")
			return r
		}, 403, "protocol upgrades", "system:node:pico-z1"},
		{"signed, an ambiguous query", func() *http.Request {
			return signed(t, d.Key, d.Name, "GET", "/api/v1/pods?fieldSelector=a&fieldSelector=b", "", "", t0.Unix(), 4)
		}, 400, "", "system:node:pico-z1"},
		{"signed, with a body", func() *http.Request {
			return signed(t, d.Key, d.Name, "PATCH", "/api/v1/nodes/pico-z2/status", smp, `{"status":{}}`, t0.Unix(), 5)
		}, 403, "no rule allows PATCH", "system:node:pico-z1"},
		{"forged, another node", func() *http.Request {
			return signed(t, forger[:], d.Name, "GET", "/api/v1/nodes/pico-z2", "", "", t0.Unix(), 6)
		}, 401, "authentication required", "-"},
		{"forged, an upgrade", func() *http.Request {
			r := signed(t, forger[:], d.Name, "GET", "/api/v1/nodes/pico-z1", "", "", t0.Unix(), 7)
			r.Header.Set("Upgrade", "SPDY/3.1")
			return r
		}, 401, "authentication required", "-"},
		{"forged, an ambiguous query", func() *http.Request {
			return signed(t, forger[:], d.Name, "GET", "/api/v1/pods?fieldSelector=a&fieldSelector=b", "", "", t0.Unix(), 8)
		}, 401, "authentication required", "-"},
		{"forged, with a body", func() *http.Request {
			return signed(t, forger[:], d.Name, "PATCH", "/api/v1/nodes/pico-z2/status", smp, `{"status":{}}`, t0.Unix(), 9)
		}, 401, "authentication required", "-"},
		{"tampered path, to another node", func() *http.Request {
			r := signed(t, d.Key, d.Name, "PATCH", "/api/v1/nodes/pico-z1/status", smp, `{"status":{}}`, t0.Unix(), 10)
			r.URL.Path = "/api/v1/nodes/pico-z2/status"
			return r
		}, 401, "authentication required", "-"},
		{"tampered method, to one no rule allows", func() *http.Request {
			r := signed(t, d.Key, d.Name, "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dpico-z1", "", "", t0.Unix(), 11)
			r.Method = "DELETE"
			return r
		}, 401, "authentication required", "-"},
		{"replay of a refused request", func() *http.Request {
			return signed(t, d.Key, d.Name, "GET", "/api/v1/nodes/pico-z2", "", "", t0.Unix(), 2)
		}, 401, "nonce already used", "-"},
	}
	var forwarded atomic.Int32
	transport := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		forwarded.Add(1)
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(`{}`)), Request: r}, nil
	})
	var logs bytes.Buffer
	g := newTestGateway(t, Config{Registry: registryOf(d), Transport: transport, Now: func() time.Time { return t0 },
		DeviceRate: 1000, DeviceBurst: 1000, AccessLog: true, AccessLogger: slog.New(slog.NewJSONHandler(&logs, nil))})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs.Reset()
			before := forwarded.Load()
			rec := httptest.NewRecorder()
			g.Handler().ServeHTTP(rec, tt.req())
			if rec.Code != tt.want {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, tt.want)
			}
			if tt.want != 200 {
				if s := readStatus(t, rec.Body.Bytes()); !strings.Contains(s.Message, tt.wantMsg) {
					t.Errorf("got message %q, want it to mention %q", s.Message, tt.wantMsg)
				}
				if n := forwarded.Load() - before; n != 0 {
					t.Errorf("got %d requests upstream, want none", n)
				}
			}
			var line struct{ Identity string }
			if err := json.Unmarshal(logs.Bytes(), &line); err != nil || line.Identity != tt.identity {
				t.Errorf("access log: got identity %q (%v) in %q, want %q", line.Identity, err, logs.String(), tt.identity)
			}
		})
	}
	if n := g.unverified.used.Load(); n != 0 {
		t.Errorf("unverified bytes afterwards: got %d, want 0", n)
	}
}
