package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/hmacauth"
	"github.com/picogate/picogate/internal/registry"
)

// t0 is the fixed clock of the signing tests.
var t0 = time.Unix(1764579600, 0)

func hmacDev(name string) *registry.Device {
	k := sha256.Sum256([]byte("key-" + name))
	return &registry.Device{Name: name, Auth: registry.AuthHMAC, Key: k[:], User: []string{registry.NodeUser(name)}, Groups: registry.DeviceGroups()}
}

// signed builds a request signed with key at ts with nonce n.
func signed(t testing.TB, key []byte, name, method, target, ctype, body string, ts int64, n int) *http.Request {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	if body != "" {
		r = httptest.NewRequest(method, target, strings.NewReader(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
	}
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	m := &hmacauth.Message{Method: method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, ContentType: ctype,
		Timestamp: fmt.Sprint(ts), Nonce: fmt.Sprintf("%032x", n), BodySHA256: sha256.Sum256([]byte(body))}
	r.Header.Set("Authorization", hmacauth.Authorization(name, m, hmacauth.Sign(key, m)))
	r.RemoteAddr = "192.168.1.20:40000"
	return r
}

// bodyEcho records the body and device the next handler saw.
type bodyEcho struct {
	body   string
	device string
}

func (b *bodyEcho) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	got, _ := io.ReadAll(r.Body)
	b.body = string(got)
	if d := DeviceFrom(r); d != nil {
		b.device = d.Name
	}
	w.WriteHeader(http.StatusOK)
}

func TestAuthenticateSigned(t *testing.T) {
	d := hmacDev("pico-h1")
	revoked := hmacDev("pico-h2")
	revoked.Revoked = t0
	tokenDev := dev("pico-t1", registry.AuthToken)
	other := hmacDev("pico-h3")
	const patchCT = "application/strategic-merge-patch+json"
	const body = `{"status":{}}`
	tests := []struct {
		name     string
		req      func() *http.Request
		want     int
		wantBody string // substring of the refusal
	}{
		{"GET", func() *http.Request {
			return signed(t, d.Key, d.Name, "GET", "/api/v1/nodes/pico-h1", "", "", t0.Unix(), 1)
		}, 200, ""},
		{"PATCH with body", func() *http.Request {
			return signed(t, d.Key, d.Name, "PATCH", "/api/v1/nodes/pico-h1/status", patchCT, body, t0.Unix(), 2)
		}, 200, ""},
		{"query as sent", func() *http.Request {
			return signed(t, d.Key, d.Name, "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dpico-h1&watch=1", "", "", t0.Unix(), 3)
		}, 200, ""},
		{"29s behind", func() *http.Request { return signed(t, d.Key, d.Name, "GET", "/version", "", "", t0.Unix()-29, 4) }, 200, ""},
		{"30s ahead", func() *http.Request { return signed(t, d.Key, d.Name, "GET", "/version", "", "", t0.Unix()+30, 5) }, 200, ""},
		{"31s behind", func() *http.Request { return signed(t, d.Key, d.Name, "GET", "/version", "", "", t0.Unix()-31, 6) }, 401, "is -31s from the gateway's clock"},
		{"31s ahead", func() *http.Request { return signed(t, d.Key, d.Name, "GET", "/version", "", "", t0.Unix()+31, 7) }, 401, "Date header"},
		{"tampered body", func() *http.Request {
			r := signed(t, d.Key, d.Name, "PATCH", "/api/v1/nodes/pico-h1/status", patchCT, body, t0.Unix(), 8)
			r.Body = io.NopCloser(strings.NewReader(`{"status":{"x":1}}`))
			return r
		}, 401, "authentication required"},
		{"tampered path", func() *http.Request {
			r := signed(t, d.Key, d.Name, "GET", "/api/v1/nodes/pico-h1", "", "", t0.Unix(), 9)
			r.URL.Path = "/api/v1/nodes/pico-h3"
			return r
		}, 401, "authentication required"},
		{"tampered query", func() *http.Request {
			r := signed(t, d.Key, d.Name, "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dpico-h1", "", "", t0.Unix(), 10)
			r.URL.RawQuery = "fieldSelector=spec.nodeName%3Dpico-h3"
			return r
		}, 401, "authentication required"},
		{"tampered method", func() *http.Request {
			r := signed(t, d.Key, d.Name, "GET", "/api/v1/nodes/pico-h1", "", "", t0.Unix(), 11)
			r.Method = "DELETE"
			return r
		}, 401, "authentication required"},
		{"tampered content type", func() *http.Request {
			r := signed(t, d.Key, d.Name, "PATCH", "/api/v1/nodes/pico-h1/status", patchCT, body, t0.Unix(), 12)
			r.Header.Set("Content-Type", "application/merge-patch+json")
			return r
		}, 401, "authentication required"},
		{"two content types", func() *http.Request {
			r := signed(t, d.Key, d.Name, "PATCH", "/api/v1/nodes/pico-h1/status", patchCT, body, t0.Unix(), 13)
			r.Header.Add("Content-Type", patchCT)
			return r
		}, 401, "authentication required"},
		{"another device's key", func() *http.Request { return signed(t, other.Key, d.Name, "GET", "/version", "", "", t0.Unix(), 14) }, 401, "authentication required"},
		{"unknown device", func() *http.Request { return signed(t, d.Key, "pico-nobody", "GET", "/version", "", "", t0.Unix(), 15) }, 401, "authentication required"},
		{"token device signing", func() *http.Request { return signed(t, d.Key, tokenDev.Name, "GET", "/version", "", "", t0.Unix(), 16) }, 401, "authentication required"},
		{"revoked", func() *http.Request {
			return signed(t, revoked.Key, revoked.Name, "GET", "/version", "", "", t0.Unix(), 17)
		}, 401, "authentication required"},
		{"malformed", func() *http.Request {
			r := signed(t, d.Key, d.Name, "GET", "/version", "", "", t0.Unix(), 18)
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), ", Nonce", ",Nonce", 1))
			return r
		}, 401, "authentication required"},
	}
	g := newTestGateway(t, Config{Registry: registryOf(d, revoked, tokenDev, other), Now: func() time.Time { return t0 }})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			echo := &bodyEcho{}
			rec := httptest.NewRecorder()
			r := tt.req()
			wantBody := ""
			if tt.want == 200 && r.GetBody != nil {
				b, _ := r.GetBody()
				raw, _ := io.ReadAll(b)
				wantBody = string(raw)
			}
			signedLine(g, echo).ServeHTTP(rec, r)
			if rec.Code != tt.want {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, tt.want)
			}
			if tt.want != 200 {
				if s := readStatus(t, rec.Body.Bytes()); !strings.Contains(s.Message, tt.wantBody) {
					t.Errorf("got message %q, want it to mention %q", s.Message, tt.wantBody)
				}
				return
			}
			if echo.device != d.Name || echo.body != wantBody {
				t.Errorf("next got device %q body %q, want %q and %q", echo.device, echo.body, d.Name, wantBody)
			}
		})
	}
}

func TestSignedReplayIsRefused(t *testing.T) {
	d := hmacDev("pico-r1")
	g := newTestGateway(t, Config{Registry: registryOf(d), Now: func() time.Time { return t0 }})
	first := signed(t, d.Key, d.Name, "PATCH", "/api/v1/nodes/pico-r1/status", "application/json", `{}`, t0.Unix(), 1)
	auth := first.Header.Get("Authorization")
	for i, want := range []int{200, 401, 401} {
		r := httptest.NewRequest("PATCH", "/api/v1/nodes/pico-r1/status", strings.NewReader(`{}`))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", auth)
		r.RemoteAddr = "192.168.1.20:40000"
		rec := httptest.NewRecorder()
		signedLine(g, &okHandler{}).ServeHTTP(rec, r)
		if rec.Code != want {
			t.Fatalf("send %d: got %d, want %d", i, rec.Code, want)
		}
		if want == 401 && !strings.Contains(rec.Body.String(), "nonce already used") {
			t.Errorf("send %d: got %s, want the replay named", i, rec.Body)
		}
	}
}

func TestSignedNonceCacheFull(t *testing.T) {
	d := hmacDev("pico-n1")
	g := newTestGateway(t, Config{Registry: registryOf(d), NonceCacheSize: 3, Now: func() time.Time { return t0 }})
	for i, want := range []int{200, 200, 200, 429} {
		rec := httptest.NewRecorder()
		signedLine(g, &okHandler{}).ServeHTTP(rec, signed(t, d.Key, d.Name, "GET", "/version", "", "", t0.Unix(), i))
		if rec.Code != want {
			t.Fatalf("request %d: got %d, want %d", i, rec.Code, want)
		}
	}
}

func TestSignedRotationUsesNextKey(t *testing.T) {
	d := hmacDev("pico-k1")
	next := sha256.Sum256([]byte("next"))
	d.NextKey = next[:]
	var promoted atomic.Value
	g := newTestGateway(t, Config{Registry: registryOf(d), Now: func() time.Time { return t0 },
		OnNextCredential: func(name string, used []byte) { promoted.Store(name + "=" + hex.EncodeToString(used)) }})
	rec := httptest.NewRecorder()
	signedLine(g, &okHandler{}).ServeHTTP(rec, signed(t, d.Key, d.Name, "GET", "/version", "", "", t0.Unix(), 1))
	if rec.Code != 200 || promoted.Load() != nil {
		t.Fatalf("current key: got %d, promoted %v; want 200 and no promotion", rec.Code, promoted.Load())
	}
	rec = httptest.NewRecorder()
	signedLine(g, &okHandler{}).ServeHTTP(rec, signed(t, d.NextKey, d.Name, "GET", "/version", "", "", t0.Unix(), 2))
	if want := d.Name + "=" + hex.EncodeToString(d.NextKey); rec.Code != 200 || promoted.Load() != want {
		t.Errorf("next key: got %d, promoted %v; want 200 and %q", rec.Code, promoted.Load(), want)
	}
}

func TestTokenRotationUsesNextToken(t *testing.T) {
	d := dev("pico-k2", registry.AuthToken)
	d.NextTokenHash = registry.HashToken("next-token")
	var promoted atomic.Value
	reg := registryOf(d)
	reg.byToken = func(tok string) (*registry.Device, bool) {
		h := registry.HashToken(tok)
		return d, h == d.TokenHash || h == d.NextTokenHash
	}
	g := newTestGateway(t, Config{Registry: reg, OnNextCredential: func(name string, _ []byte) { promoted.Store(name) }})
	for _, tok := range []string{"tok-pico-k2", "next-token"} {
		r := httptest.NewRequest("GET", "/version", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		r.RemoteAddr = "192.168.1.20:40000"
		rec := httptest.NewRecorder()
		signedLine(g, &okHandler{}).ServeHTTP(rec, r)
		if rec.Code != 200 {
			t.Fatalf("%s: got %d, want 200", tok, rec.Code)
		}
	}
	if promoted.Load() != "pico-k2" {
		t.Errorf("got promotion %v, want pico-k2 after its next token was used", promoted.Load())
	}
}

func TestRequireHMAC(t *testing.T) {
	tok := dev("pico-q1", registry.AuthToken)
	ip := dev("pico-q2", registry.AuthIP)
	ip.Source = netip.MustParsePrefix("192.168.1.9/32")
	h := hmacDev("pico-q3")
	g := newTestGateway(t, Config{Registry: registryOf(tok, ip, h), RequireHMAC: true, Now: func() time.Time { return t0 }})
	bearer := httptest.NewRequest("GET", "/version", nil)
	bearer.Header.Set("Authorization", "Bearer tok-pico-q1")
	bearer.RemoteAddr = "192.168.1.20:40000"
	fromIP := httptest.NewRequest("GET", "/version", nil)
	fromIP.RemoteAddr = "192.168.1.9:4000"
	for name, tt := range map[string]struct {
		r    *http.Request
		want int
	}{
		"bearer token": {bearer, 401},
		"ip mode":      {fromIP, 401},
		"signed":       {signed(t, h.Key, h.Name, "GET", "/version", "", "", t0.Unix(), 1), 200},
	} {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			g.Handler().ServeHTTP(rec, tt.r)
			if tt.want == 200 {
				// Reaching the (unreachable) upstream proves authentication passed.
				if rec.Code == 401 {
					t.Fatalf("got 401 %s, want it authenticated", rec.Body)
				}
				return
			}
			if rec.Code != tt.want || !strings.Contains(rec.Body.String(), "requires signed requests") {
				t.Errorf("got %d %s, want %d naming the hmac requirement", rec.Code, rec.Body, tt.want)
			}
		})
	}
	if _, err := New(Config{Upstream: mustURL("http://x"), Transport: http.DefaultTransport, SharedIdentity: true, RequireHMAC: true}); err == nil {
		t.Error("require hmac with shared identity: got nil, want a configuration error")
	}
}

// TestSignedBodyReadOnce: the body readBody read for the signature reaches the upstream once, as sent.
func TestSignedBodyReadOnce(t *testing.T) {
	d := hmacDev("pico-b1")
	var forwarded string
	transport := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		b, _ := io.ReadAll(r.Body)
		forwarded = string(b)
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(`{}`)), Request: r}, nil
	})
	g := newTestGateway(t, Config{Registry: registryOf(d), Transport: transport, Now: func() time.Time { return t0 }, DeviceRate: 1000, DeviceBurst: 1000})
	rec := httptest.NewRecorder()
	const body = `{"status":{"conditions":[]}}`
	g.Handler().ServeHTTP(rec, signed(t, d.Key, d.Name, "PATCH", "/api/v1/nodes/pico-b1/status", "application/strategic-merge-patch+json", body, t0.Unix(), 1))
	if rec.Code != 200 || forwarded != body {
		t.Errorf("got %d and body %q, want 200 and %q", rec.Code, forwarded, body)
	}
}

// TestForgedSignatureSpendsNothing: requests with a valid header but a wrong signature are refused
// without spending the device's rate limit, its nonces, or the budget of unverified bytes.
func TestForgedSignatureSpendsNothing(t *testing.T) {
	d := hmacDev("pico-f1")
	forger := sha256.Sum256([]byte("not the key"))
	g := newTestGateway(t, Config{Registry: registryOf(d), Now: func() time.Time { return t0 }, DeviceRate: 0.001, DeviceBurst: 2})
	for i := range 10 {
		rec := httptest.NewRecorder()
		signedLine(g, &okHandler{}).ServeHTTP(rec, signed(t, forger[:], d.Name, "PATCH", "/api/v1/nodes/pico-f1/status", "application/json", `{}`, t0.Unix(), i))
		if rec.Code != 401 {
			t.Fatalf("forgery %d: got %d, want 401", i, rec.Code)
		}
	}
	if n := g.unverified.used.Load(); n != 0 {
		t.Errorf("unverified bytes after the forgeries: got %d, want 0", n)
	}
	// The device's own requests, with nonces the forger used, still pass: its burst and nonces are intact.
	for i := range 2 {
		rec := httptest.NewRecorder()
		signedLine(g, &okHandler{}).ServeHTTP(rec, signed(t, d.Key, d.Name, "PATCH", "/api/v1/nodes/pico-f1/status", "application/json", `{}`, t0.Unix(), i))
		if rec.Code != 200 {
			t.Errorf("the device's request %d after the forgeries: got %d %s, want 200", i, rec.Code, rec.Body)
		}
	}
}
