package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/registry"
	"github.com/picogate/picogate/internal/status"
)

// fakeRegistry is a func adapter for the Registry interface.
type fakeRegistry struct {
	byToken func(string) (*registry.Device, bool)
	byAddr  func(netip.Addr) (*registry.Device, bool)
	byName  func(string) (*registry.Device, bool)
	synced  bool
}

func (f fakeRegistry) ByToken(t string) (*registry.Device, bool) {
	if f.byToken == nil {
		return nil, false
	}
	return f.byToken(t)
}
func (f fakeRegistry) ByAddr(a netip.Addr) (*registry.Device, bool) {
	if f.byAddr == nil {
		return nil, false
	}
	return f.byAddr(a)
}
func (f fakeRegistry) ByName(n string) (*registry.Device, bool) {
	if f.byName == nil {
		return nil, false
	}
	return f.byName(n)
}
func (f fakeRegistry) HasSynced() bool { return f.synced }

func dev(name string, auth registry.AuthMode) *registry.Device {
	return &registry.Device{Name: name, Auth: auth, TokenHash: registry.HashToken("tok-" + name), User: []string{registry.NodeUser(name)}, Groups: registry.DeviceGroups()}
}

// registryOf serves the given devices: token devices by "tok-NAME", ip devices by their Source address.
func registryOf(ds ...*registry.Device) fakeRegistry {
	return fakeRegistry{
		synced: true,
		byToken: func(t string) (*registry.Device, bool) {
			for _, d := range ds {
				if d.TokenHash == registry.HashToken(t) {
					return d, true
				}
			}
			return nil, false
		},
		byAddr: func(a netip.Addr) (*registry.Device, bool) {
			for _, d := range ds {
				if d.Auth == registry.AuthIP && d.Source.Addr() == a {
					return d, true
				}
			}
			return nil, false
		},
		byName: func(n string) (*registry.Device, bool) {
			for _, d := range ds {
				if d.Name == n {
					return d, true
				}
			}
			return nil, false
		},
	}
}

func newTestGateway(t *testing.T, cfg Config) *Gateway {
	t.Helper()
	if cfg.Upstream == nil {
		cfg.Upstream = &url.URL{Scheme: "http", Host: "upstream.invalid"}
	}
	if cfg.Transport == nil {
		cfg.Transport = http.DefaultTransport
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return g
}

// okHandler records that it was reached.
type okHandler struct{ reached int }

func (h *okHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.reached++
	w.WriteHeader(http.StatusOK)
}

func readStatus(t *testing.T, body []byte) status.Status {
	t.Helper()
	var s status.Status
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("body is not a Status: %v: %q", err, body)
	}
	return s
}

func TestNewReportsEveryProblem(t *testing.T) {
	_, err := New(Config{MaxCompactBytes: 100, DeviceRate: -1})
	if err == nil {
		t.Fatal("got nil, want errors")
	}
	for _, want := range []string{"upstream URL", "transport", "no device registry", "below 4096", "device rate"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to mention %q", err, want)
		}
	}
}

func TestSourceCheck(t *testing.T) {
	g := newTestGateway(t, Config{SharedIdentity: true, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}})
	tests := []struct {
		remote string
		want   int
	}{
		{"192.168.1.7:4000", 200},
		{"[::ffff:192.168.1.7]:4000", 200},
		{"192.168.2.7:4000", 403},
		{"8.8.8.8:53", 403},
		{"garbage", 403},
	}
	for _, tt := range tests {
		t.Run(tt.remote, func(t *testing.T) {
			next := &okHandler{}
			req := httptest.NewRequest("GET", "/version", nil)
			req.RemoteAddr = tt.remote
			rec := httptest.NewRecorder()
			g.sourceCheck(next).ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("got %d, want %d", rec.Code, tt.want)
			}
			if reached := next.reached == 1; reached != (tt.want == 200) {
				t.Errorf("reached next: got %v, want %v", reached, tt.want == 200)
			}
		})
	}
}

func TestAuthenticate(t *testing.T) {
	tokenDev := dev("pico-1", registry.AuthToken)
	revoked := dev("pico-2", registry.AuthToken)
	revoked.Revoked = time.Now()
	pinned := dev("pico-3", registry.AuthToken)
	pinned.Source = netip.MustParsePrefix("10.0.0.3/32")
	ipDev := dev("pico-4", registry.AuthIP)
	ipDev.Source = netip.MustParsePrefix("10.0.0.4/32")
	reg := registryOf(tokenDev, revoked, pinned, ipDev)

	tests := []struct {
		name       string
		shared     bool
		synced     bool
		remote     string
		authz      []string
		wantCode   int
		wantDevice string
	}{
		{"token", false, true, "10.0.0.9", []string{"Bearer tok-pico-1"}, 200, "pico-1"},
		{"bearer is case-insensitive", false, true, "10.0.0.9", []string{"bearer tok-pico-1"}, 200, "pico-1"},
		{"unknown token", false, true, "10.0.0.9", []string{"Bearer tok-nobody"}, 401, ""},
		{"unknown token with shared identity", true, true, "10.0.0.9", []string{"Bearer tok-nobody"}, 401, ""},
		{"revoked", false, true, "10.0.0.9", []string{"Bearer tok-pico-2"}, 401, ""},
		{"pinned source ok", false, true, "10.0.0.3", []string{"Bearer tok-pico-3"}, 200, "pico-3"},
		{"pinned source wrong", false, true, "10.0.0.4", []string{"Bearer tok-pico-3"}, 401, ""},
		{"basic auth", false, true, "10.0.0.9", []string{"Basic dXNlcjpwYXNz"}, 401, ""},
		{"empty bearer", false, true, "10.0.0.9", []string{"Bearer "}, 401, ""},
		{"bearer with space", false, true, "10.0.0.9", []string{"Bearer tok pico-1"}, 401, ""},
		{"two headers", false, true, "10.0.0.9", []string{"Bearer tok-pico-1", "Bearer tok-pico-1"}, 401, ""},
		{"huge token", false, true, "10.0.0.9", []string{"Bearer " + strings.Repeat("a", 4000)}, 401, ""},
		{"ip mode", false, true, "10.0.0.4", nil, 200, "pico-4"},
		{"no credential", false, true, "10.0.0.9", nil, 401, ""},
		{"no credential, shared", true, true, "10.0.0.9", nil, 200, ""},
		{"not synced", false, false, "10.0.0.4", nil, 503, ""},
		{"not synced, shared", true, false, "10.0.0.9", nil, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := reg
			r.synced = tt.synced
			g := newTestGateway(t, Config{Registry: r, SharedIdentity: tt.shared})
			var got *registry.Device
			next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = infoFrom(r).device })
			req := httptest.NewRequest("GET", "/version", nil)
			req.RemoteAddr = tt.remote + ":1234"
			req.Header["Authorization"] = tt.authz
			rec := httptest.NewRecorder()
			g.observe(g.sourceCheck(g.authenticate(next))).ServeHTTP(rec, req)
			if rec.Code != tt.wantCode {
				t.Fatalf("got %d, want %d", rec.Code, tt.wantCode)
			}
			if tt.wantCode != 200 {
				s := readStatus(t, rec.Body.Bytes())
				if strings.Contains(s.Message, "tok-") {
					t.Errorf("got a message that echoes the credential: %q", s.Message)
				}
				return
			}
			gotName := ""
			if got != nil {
				gotName = got.Name
			}
			if gotName != tt.wantDevice {
				t.Errorf("device: got %q, want %q", gotName, tt.wantDevice)
			}
		})
	}
}

func TestAuthorize(t *testing.T) {
	g := newTestGateway(t, Config{SharedIdentity: true})
	tests := []struct {
		name    string
		method  string
		target  string
		headers map[string]string
		want    int
	}{
		{"allowed", "GET", "/api/v1/nodes/pico-1", nil, 200},
		{"upgrade", "GET", "/api/v1/namespaces/default/pods/p/exec", map[string]string{"Upgrade": "SPDY/3.1", "Connection": "Upgrade"}, 403},
		{"connection upgrade only", "GET", "/api/v1/nodes/pico-1", map[string]string{"Connection": "keep-alive, Upgrade"}, 403},
		{"method override", "POST", "/api/v1/nodes", map[string]string{"X-HTTP-Method-Override": "DELETE"}, 400},
		{"encoded slash", "GET", "/api/v1/nodes/a%2Fb", nil, 400},
		{"dot dot", "GET", "/api/v1/nodes/%2e%2e/x", nil, 400},
		{"double slash", "GET", "/api//v1/nodes", nil, 400},
		{"trailing dot", "GET", "/api/v1/nodes/pico-1.", nil, 400},
		{"duplicate query", "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dpico-1&fieldSelector=", nil, 400},
		{"not in policy", "DELETE", "/api/v1/nodes/pico-1", nil, 403},
		{"secrets list", "GET", "/api/v1/namespaces/kube-system/secrets", nil, 403},
		{"device record", "GET", "/api/v1/namespaces/picogate-system/secrets/device-pico-1", nil, 403},
		{"device records", "GET", "/api/v1/namespaces/picogate-system/secrets", nil, 403},
		{"secret elsewhere", "GET", "/api/v1/namespaces/default/secrets/wifi", nil, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := &okHandler{}
			req := httptest.NewRequest(tt.method, tt.target, nil)
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			g.authorize(next).ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("got %d (%s), want %d", rec.Code, rec.Body.String(), tt.want)
			}
			if (next.reached == 1) != (tt.want == 200) {
				t.Errorf("reached next: got %v, want %v", next.reached == 1, tt.want == 200)
			}
			if tt.want != 200 {
				if s := readStatus(t, rec.Body.Bytes()); s.Code != tt.want || s.Message == "" {
					t.Errorf("got status %+v, want code %d with a message", s, tt.want)
				}
			}
		})
	}
}

func TestLimitRate(t *testing.T) {
	d := dev("pico-1", registry.AuthToken)
	g := newTestGateway(t, Config{Registry: registryOf(d), DeviceRate: 1, DeviceBurst: 3})
	other := g.states.get("pico-2")
	h := g.limit(&okHandler{})
	codes := map[int]int{}
	var retry string
	for range 10 {
		req := httptest.NewRequest("GET", "/version", nil)
		info := &reqInfo{start: time.Now(), device: d, state: g.states.get("pico-1")}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, withInfo(req, info))
		codes[rec.Code]++
		if rec.Code == 429 {
			retry = rec.Header().Get("Retry-After")
		}
	}
	if codes[200] != 3 || codes[429] != 7 {
		t.Errorf("got %v, want 3×200 and 7×429", codes)
	}
	if retry == "" {
		t.Errorf("got no Retry-After on 429")
	}
	if !other.limiter.Allow() {
		t.Errorf("another device's budget was spent by pico-1")
	}
}

func TestLimitInFlight(t *testing.T) {
	g := newTestGateway(t, Config{SharedIdentity: true, MaxInFlight: 1})
	release := make(chan struct{})
	entered := make(chan struct{})
	h := g.limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
	}))
	done := make(chan struct{})
	go func() {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/version", nil))
		close(done)
	}()
	<-entered
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/version", nil))
	close(release)
	<-done
	if rec.Code != 503 || rec.Header().Get("Retry-After") == "" {
		t.Errorf("got %d Retry-After=%q, want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
}

func TestLimitBody(t *testing.T) {
	g := newTestGateway(t, Config{SharedIdentity: true, MaxBodyBytes: 10})
	tests := []struct {
		name   string
		body   string
		length int64
		want   int
	}{
		{"small", "0123456789", 10, 200},
		{"declared too large", "01234567890", 11, 413},
		{"chunked too large", "01234567890", -1, 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			h := g.limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got = string(b)
			}))
			req := httptest.NewRequest("POST", "/api/v1/nodes", strings.NewReader(tt.body))
			req.ContentLength = tt.length
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("got %d, want %d", rec.Code, tt.want)
			}
			if tt.want == 200 && got != tt.body {
				t.Errorf("forwarded body: got %q, want %q", got, tt.body)
			}
		})
	}
}

func TestRewrite(t *testing.T) {
	d := dev("pico-1", registry.AuthToken)
	g := newTestGateway(t, Config{Registry: registryOf(d)})
	in := httptest.NewRequest("GET", "/api/v1/nodes/pico-1?x=1", nil)
	in.RemoteAddr = "192.168.1.9:5000"
	for k, v := range map[string]string{
		"Authorization": "Bearer tok-pico-1", "Impersonate-User": "system:admin", "Impersonate-Group": "system:masters",
		"Impersonate-Uid": "0", "Impersonate-Extra-Scopes": "all", "X-Remote-User": "admin", "X-Remote-Group": "system:masters",
		"Cookie": "a=b", "Proxy-Authorization": "Basic x", "User-Agent": "k3s-pico-node/1.0",
	} {
		in.Header.Set(k, v)
	}
	in = withInfo(in, &reqInfo{device: d})
	pr := &httputil.ProxyRequest{In: in, Out: in.Clone(in.Context())}
	g.rewrite(pr)
	h := pr.Out.Header
	for _, k := range []string{"Authorization", "Impersonate-Uid", "Impersonate-Extra-Scopes", "X-Remote-User", "X-Remote-Group", "Cookie", "Proxy-Authorization"} {
		if v := h.Values(k); len(v) > 0 {
			t.Errorf("%s: got %q forwarded, want it removed", k, v)
		}
	}
	if got := h.Values("Impersonate-User"); len(got) != 1 || got[0] != "system:node:pico-1" {
		t.Errorf("Impersonate-User: got %q, want [system:node:pico-1]", got)
	}
	if got := strings.Join(h.Values("Impersonate-Group"), ","); got != "system:nodes,picogate:devices" {
		t.Errorf("Impersonate-Group: got %q, want system:nodes,picogate:devices", got)
	}
	if got := h.Get("X-Forwarded-For"); got != "192.168.1.9" {
		t.Errorf("X-Forwarded-For: got %q, want the device address", got)
	}
	if got := h.Get("User-Agent"); got != "k3s-pico-node/1.0" {
		t.Errorf("User-Agent: got %q, want the device's", got)
	}
	if pr.Out.URL.Host != "upstream.invalid" || pr.Out.URL.Path != "/api/v1/nodes/pico-1" || pr.Out.URL.RawQuery != "x=1" {
		t.Errorf("URL: got %s, want http://upstream.invalid/api/v1/nodes/pico-1?x=1", pr.Out.URL)
	}
}

func TestRewriteSharedAddsNoIdentity(t *testing.T) {
	g := newTestGateway(t, Config{SharedIdentity: true})
	in := httptest.NewRequest("GET", "/version", nil)
	in.Header.Set("Impersonate-User", "system:admin")
	pr := &httputil.ProxyRequest{In: in, Out: in.Clone(in.Context())}
	g.rewrite(pr)
	if v := pr.Out.Header.Values("Impersonate-User"); len(v) > 0 {
		t.Errorf("got Impersonate-User %q, want none", v)
	}
}

func TestUpstream401BecomesRetryable503(t *testing.T) {
	g := newTestGateway(t, Config{SharedIdentity: true})
	res := &http.Response{StatusCode: 401, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(`{"kind":"Status","code":401}`)), Request: httptest.NewRequest("GET", "/version", nil)}
	if err := g.upstreamRefusedGateway(res); err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 503 || res.Header.Get("Retry-After") == "" {
		t.Fatalf("got %d Retry-After=%q, want 503 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
	}
	if s := readStatus(t, body); s.Code != 503 || !strings.Contains(s.Message, "gateway's credential") {
		t.Errorf("got %+v, want a 503 Status about the gateway's credential", s)
	}
}
