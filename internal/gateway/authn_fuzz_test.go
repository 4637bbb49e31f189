package gateway

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/picogate/picogate/internal/policy"
	"github.com/picogate/picogate/internal/registry"
)

// FuzzBearer: whatever the Authorization value, bearer either refuses it or returns exactly the text
// after a case-insensitive "Bearer ": 1 to 512 printable ASCII characters, no white space.
func FuzzBearer(f *testing.F) {
	for _, s := range []string{"Bearer pgt_abc", "bearer x", "Bearer ", "Bearer", "Bearer a b", "Bearer \x00", "BEARER " + strings.Repeat("t", 512),
		"Bearer " + strings.Repeat("t", 513), "Basic YWRtaW46YWRtaW4=", "Bearer  tok", "Bearer tok\t", "Bearer ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		tok, ok := bearer(v)
		if !ok {
			if tok != "" {
				t.Fatalf("refused %q but returned %q", v, tok)
			}
			return
		}
		if len(tok) == 0 || len(tok) > 512 {
			t.Fatalf("accepted a token of %d bytes from %q", len(tok), v)
		}
		if !strings.EqualFold(v[:7], "Bearer ") || v[7:] != tok {
			t.Fatalf("got token %q from %q, want the text after \"Bearer \"", tok, v)
		}
		for _, c := range []byte(tok) {
			if c <= ' ' || c > '~' {
				t.Fatalf("accepted byte %#x in token %q", c, tok)
			}
		}
	})
}

// fuzzDevices are the registered devices of FuzzDeviceRequest: a token device and an ip-mode one.
var fuzzDevices = struct {
	token, ip *registry.Device
	ipAddr    netip.Addr
}{token: dev("pico-1", registry.AuthToken), ip: dev("pico-ip", registry.AuthIP), ipAddr: netip.MustParseAddr("192.168.1.30")}

// FuzzDeviceRequest parses arbitrary bytes as a device's request (net/http's own parser, as the server
// does) and sends it through the whole middleware chain to a transport that records what would reach
// the API server. Whatever arrives: nothing panics, and what is forwarded carries no identity the
// client sent, is impersonated as exactly the device that authenticated (a token device only with its
// own token, the ip-mode device only from its own address and without any Authorization), is no
// protocol upgrade, and has a path the policy's own check accepts.
func FuzzDeviceRequest(f *testing.F) {
	seeds := []struct {
		raw  string
		from byte // odd: from the ip-mode device's address
	}{
		{"GET /api/v1/nodes/pico-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-pico-1\r\n\r\n", 0},
		{"PATCH /api/v1/nodes/pico-1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-pico-1\r\nContent-Type: application/strategic-merge-patch+json\r\nContent-Length: 13\r\n\r\n{\"status\":{}}", 0},
		{"GET /api/v1/pods?fieldSelector=spec.nodeName%3Dpico-ip&watch=1 HTTP/1.1\r\nHost: x\r\n\r\n", 1},
		{"GET /api/v1/nodes/pico-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-pico-1\r\nImpersonate-User: system:admin\r\nImpersonate-Group: system:masters\r\nImpersonate-Extra-Scopes: x\r\nX-Remote-User: a\r\n\r\n", 0},
		{"GET /api/v1/nodes/pico-1%2Fstatus HTTP/1.1\r\nHost: x\r\nAuthorization: bearer tok-pico-1\r\n\r\n", 0},
		{"GET /api/v1/namespaces/default/pods/p/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-pico-1\r\nUpgrade: SPDY/3.1\r\nConnection: Upgrade\r\n\r\n", 0},
		{"GET /api/v1/nodes/pico-ip HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-pico-1\r\nAuthorization: Bearer tok-pico-ip\r\n\r\n", 1},
		{"POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\nX-HTTP-Method-Override: DELETE\r\nCookie: a=b\r\nContent-Length: 2\r\n\r\n{}", 1},
		{"GET /api/v1/namespaces/default/configmaps/pico-config HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic eA==\r\nConnection: close, X-Remote-User\r\nX-Remote-User: system:node:pico-1\r\nCookie: s=1\r\n\r\n", 1},
		{"GET /api/v1/nodes/pico-ip HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer TOK-PICO-1\r\n\r\n", 1},
		{"GET /api/v1/nodes/pico-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-pico-1\r\nAudit-ID: spoofed\r\nX-Real-IP: 10.9.9.9\r\nX-Forwarded-For: 10.9.9.9\r\nX-Forwarded-Port: 1\r\nForwarded: for=10.9.9.9\r\nVia: 1.1 x\r\n\r\n", 0},
	}
	for _, s := range seeds {
		f.Add([]byte(s.raw), s.from)
	}
	fuzzDevices.ip.Source = netip.PrefixFrom(fuzzDevices.ipAddr, 32)
	var mu sync.Mutex
	var forwarded *http.Request
	g, err := New(Config{
		Upstream: &url.URL{Scheme: "https", Host: "upstream.invalid"},
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			forwarded = r
			mu.Unlock()
			if r.Body != nil {
				_, _ = io.Copy(io.Discard, r.Body)
			}
			return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(`{"kind":"Node"}`)), Request: r}, nil
		}),
		Registry:    registryOf(fuzzDevices.token, fuzzDevices.ip),
		Compact:     true,
		DeviceRate:  1e9,
		DeviceBurst: 1 << 30,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte, from byte) {
		in, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return // net/http refuses it before any handler runs
		}
		client := "192.168.1.20:40000"
		if from%2 == 1 {
			client = fuzzDevices.ipAddr.String() + ":40000"
		}
		in.RemoteAddr = client
		sent := in.Header.Clone()
		mu.Lock()
		forwarded = nil
		mu.Unlock()
		g.Handler().ServeHTTP(httptest.NewRecorder(), in)
		mu.Lock()
		out := forwarded
		mu.Unlock()
		if out == nil {
			return
		}
		checkForwarded(t, sent, client, out)
	})
}

func checkForwarded(t *testing.T, sent http.Header, client string, out *http.Request) {
	t.Helper()
	for k := range out.Header {
		switch {
		case k == "Authorization", k == "Proxy-Authorization", k == "Cookie", k == "Upgrade", k == "Connection",
			strings.HasPrefix(k, "X-Remote-"),
			strings.HasPrefix(k, "Impersonate-") && k != "Impersonate-User" && k != "Impersonate-Group",
			strings.HasPrefix(k, "X-Forwarded-") && k != "X-Forwarded-For", slices.Contains(forwardingHeaders, k):
			t.Fatalf("forwarded header %s: %q (client sent %v)", k, out.Header[k], sent)
		}
	}
	if host, _, _ := strings.Cut(client, ":"); !slices.Equal(out.Header["X-Forwarded-For"], []string{host}) {
		t.Fatalf("forwarded X-Forwarded-For %q, want only the client's address %s", out.Header["X-Forwarded-For"], host)
	}
	var want *registry.Device
	switch authz := sent.Values("Authorization"); {
	case len(authz) == 1 && len(authz[0]) > 7 && strings.EqualFold(authz[0][:7], "Bearer ") && authz[0][7:] == "tok-pico-1":
		want = fuzzDevices.token
	case len(authz) == 0 && strings.HasPrefix(client, fuzzDevices.ipAddr.String()+":"):
		want = fuzzDevices.ip
	default:
		t.Fatalf("forwarded a request with Authorization %q from %s: no device should be recognised", authz, client)
	}
	if !slices.Equal(out.Header["Impersonate-User"], want.User) || !slices.Equal(out.Header["Impersonate-Group"], want.Groups) {
		t.Fatalf("forwarded as %v %v, want %v %v", out.Header["Impersonate-User"], out.Header["Impersonate-Group"], want.User, want.Groups)
	}
	if err := policy.CheckPath(out.URL.EscapedPath()); err != nil {
		t.Fatalf("forwarded path %q: %v", out.URL.EscapedPath(), err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
