package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/hmacauth"
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
			var client netip.Addr
			next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { client = clientFrom(r) })
			req := httptest.NewRequest("GET", "/version", nil)
			req.RemoteAddr = tt.remote
			rec := httptest.NewRecorder()
			g.sourceCheck(next).ServeHTTP(rec, prepared(req))
			if rec.Code != tt.want {
				t.Fatalf("got %d, want %d", rec.Code, tt.want)
			}
			if reached := client.IsValid(); reached != (tt.want == 200) {
				t.Errorf("reached next: got %v, want %v", reached, tt.want == 200)
			}
			if tt.want == 200 && client != netip.MustParseAddr("192.168.1.7") {
				t.Errorf("client: got %s, want 192.168.1.7 (unmapped)", client)
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
		wantDevice string // "" for the shared identity
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
			var got Identity
			next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = identityFrom(r) })
			req := httptest.NewRequest("GET", "/version", nil)
			req.RemoteAddr = tt.remote + ":1234"
			req.Header["Authorization"] = tt.authz
			rec := httptest.NewRecorder()
			g.observe(g.sourceCheck(g.route(g.authenticate(next)))).ServeHTTP(rec, req)
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
			if d := got.Device(); d != nil {
				gotName = d.Name
			}
			if gotName != tt.wantDevice || got.Shared() != (tt.wantDevice == "") {
				t.Errorf("identity: got device %q shared %v, want device %q shared %v", gotName, got.Shared(), tt.wantDevice, tt.wantDevice == "")
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
			g.authorize(next).ServeHTTP(rec, prepared(req, route{}, Identity{kind: sharedIdentity}))
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

func TestDeviceRate(t *testing.T) {
	d := dev("pico-1", registry.AuthToken)
	g := newTestGateway(t, Config{Registry: registryOf(d), DeviceRate: 1, DeviceBurst: 3})
	other := g.states.get("pico-2")
	h := g.deviceRate(&okHandler{})
	codes := map[int]int{}
	var retry string
	for range 10 {
		req := prepared(httptest.NewRequest("GET", "/version", nil), Identity{kind: deviceIdentity, device: d, state: g.states.get("pico-1")}, grant{rule: "version"})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
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
	shared := httptest.NewRecorder()
	h.ServeHTTP(shared, prepared(httptest.NewRequest("GET", "/version", nil), Identity{kind: sharedIdentity}, grant{}))
	if shared.Code != 200 {
		t.Errorf("shared identity: got %d, want 200 (no device budget to spend)", shared.Code)
	}
}

// TestDeviceRateChargeOfAClaim: a signed request not yet verified hands its token on as a charge; its
// refund gives the token back, so a forger spends nothing of the device's budget.
func TestDeviceRateChargeOfAClaim(t *testing.T) {
	d := hmacDev("pico-c1")
	g := newTestGateway(t, Config{Registry: registryOf(d), DeviceRate: 0.001, DeviceBurst: 1})
	st := g.states.get(d.Name)
	var got charge
	h := g.deviceRate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = chargeFrom(r) }))
	claim := Identity{kind: deviceIdentity, device: d, state: st, claim: &hmacauth.Header{Credential: d.Name}}
	h.ServeHTTP(httptest.NewRecorder(), prepared(httptest.NewRequest("GET", "/version", nil), claim, grant{}))
	if got.res == nil {
		t.Fatal("got no charge for a claim, want its reservation")
	}
	if st.limiter.TokensAt(time.Now()) >= 1 {
		t.Fatal("the claim's token was not taken")
	}
	got.refund()
	if st.limiter.TokensAt(time.Now()) < 0.99 {
		t.Errorf("after the refund: got %.2f tokens, want the one back", st.limiter.TokensAt(time.Now()))
	}
	verified := Identity{kind: deviceIdentity, device: d, state: st}
	var charged bool
	g.deviceRate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		charged = exchangeOf(r).charge.set
	})).ServeHTTP(httptest.NewRecorder(), prepared(httptest.NewRequest("GET", "/version", nil), verified, grant{}))
	if charged {
		t.Errorf("a verified device: got a refundable charge, want none")
	}
}

func TestAdmit(t *testing.T) {
	for _, watch := range []bool{false, true} {
		t.Run(fmt.Sprintf("watch=%v", watch), func(t *testing.T) {
			g := newTestGateway(t, Config{SharedIdentity: true, MaxInFlight: 1, MaxWatches: 1})
			release := make(chan struct{})
			entered := make(chan struct{})
			h := g.admit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				close(entered)
				<-release
			}))
			done := make(chan struct{})
			go func() {
				h.ServeHTTP(httptest.NewRecorder(), prepared(httptest.NewRequest("GET", "/version", nil), grant{watch: watch}))
				close(done)
			}()
			<-entered
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, prepared(httptest.NewRequest("GET", "/version", nil), grant{watch: watch}))
			other := httptest.NewRecorder()
			h2 := g.admit(&okHandler{})
			h2.ServeHTTP(other, prepared(httptest.NewRequest("GET", "/version", nil), grant{watch: !watch}))
			close(release)
			<-done
			if rec.Code != 503 || rec.Header().Get("Retry-After") == "" {
				t.Errorf("got %d Retry-After=%q, want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
			}
			if other.Code != 200 {
				t.Errorf("the other cap (watch=%v): got %d, want 200: watches and requests are capped apart", !watch, other.Code)
			}
		})
	}
}

// TestDeviceWatches: a device may hold MaxDeviceWatches watches at once; one more is refused with 429,
// another device is not affected, and DeviceChanged ends the device's open watches.
func TestDeviceWatches(t *testing.T) {
	d1, d2 := dev("pico-w1", registry.AuthToken), dev("pico-w2", registry.AuthToken)
	g := newTestGateway(t, Config{Registry: registryOf(d1, d2), MaxDeviceWatches: 2})
	var open sync.WaitGroup
	ended := make(chan struct{}, 2)
	h := g.deviceWatches(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		open.Done()
		<-r.Context().Done()
	}))
	// serve reports a watch ended once deviceWatches has returned, so its count is settled by then.
	serve := func(r *http.Request) {
		h.ServeHTTP(httptest.NewRecorder(), r)
		ended <- struct{}{}
	}
	watch := func(ctx context.Context, d *registry.Device) *http.Request {
		return prepared(httptest.NewRequest("GET", "/api/v1/pods?watch=1", nil).WithContext(ctx), Identity{kind: deviceIdentity, device: d, state: g.states.get(d.Name)}, grant{rule: "pods", watch: true})
	}
	open.Add(2)
	for range 2 {
		go serve(watch(context.Background(), d1))
	}
	open.Wait()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, watch(context.Background(), d1))
	if rec.Code != 429 || rec.Header().Get("Retry-After") == "" {
		t.Errorf("third watch: got %d Retry-After=%q, want 429 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	open.Add(1)
	ctx, cancel := context.WithCancel(context.Background())
	go serve(watch(ctx, d2))
	open.Wait()
	g.DeviceChanged(d1.Name, true)
	<-ended
	<-ended
	if n := g.states.get(d1.Name).openWatches.Load(); n != 0 {
		t.Errorf("after DeviceChanged: got %d open watches, want 0", n)
	}
	cancel()
	<-ended
	nonWatch := httptest.NewRecorder()
	g.deviceWatches(&okHandler{}).ServeHTTP(nonWatch, prepared(httptest.NewRequest("GET", "/version", nil), Identity{kind: deviceIdentity, device: d1, state: g.states.get(d1.Name)}, grant{}))
	if nonWatch.Code != 200 {
		t.Errorf("a request that is no watch: got %d, want 200", nonWatch.Code)
	}
}

func TestReadBody(t *testing.T) {
	d := dev("pico-1", registry.AuthToken)
	tests := []struct {
		name     string
		body     string
		length   int64
		identity Identity
		want     int
	}{
		{"small", "0123456789", 10, Identity{kind: deviceIdentity, device: d}, 200},
		{"declared too large", "01234567890", 11, Identity{kind: deviceIdentity, device: d}, 413},
		{"chunked too large", "01234567890", -1, Identity{kind: deviceIdentity, device: d}, 413},
		{"chunked", "0123456789", -1, Identity{kind: deviceIdentity, device: d}, 200},
		{"shared identity within the budget", "0123456789", 10, Identity{kind: sharedIdentity}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newTestGateway(t, Config{SharedIdentity: true, MaxBodyBytes: 10})
			var got, fromValue string
			var getBody string
			h := g.readBody(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got, fromValue = string(b), string(bodyFrom(r).Bytes())
				rc, err := r.GetBody()
				if err != nil {
					t.Errorf("GetBody: %v", err)
					return
				}
				b, _ = io.ReadAll(rc)
				getBody = string(b)
				_ = rc.Close()
			}))
			req := httptest.NewRequest("POST", "/api/v1/nodes", strings.NewReader(tt.body))
			req.ContentLength = tt.length
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, prepared(req, route{}, grant{rule: "nodes"}, tt.identity))
			if rec.Code != tt.want {
				t.Fatalf("got %d, want %d", rec.Code, tt.want)
			}
			if tt.want != 200 {
				if rec.Header().Get("Connection") != "close" {
					t.Errorf("refused with the body unread: got Connection %q, want close", rec.Header().Get("Connection"))
				}
				return
			}
			if got != tt.body || fromValue != tt.body || getBody != tt.body {
				t.Errorf("body: got %q from Body, %q from the value, %q from GetBody; want %q", got, fromValue, getBody, tt.body)
			}
			if n := g.unverified.used.Load(); n != 0 {
				t.Errorf("after the request: got %d unverified bytes held, want 0", n)
			}
		})
	}
}

// TestReadBodyUnverifiedBudget: bodies whose sender is not yet known are held within the budget, each
// counting at least minUnverifiedCharge; beyond it the request is refused with 503, Retry-After and the
// connection closed, and a device's body is not counted.
func TestReadBodyUnverifiedBudget(t *testing.T) {
	d := hmacDev("pico-u1")
	g := newTestGateway(t, Config{Registry: registryOf(d), UnverifiedBodyBudget: 2 * minUnverifiedCharge, Now: func() time.Time { return t0 }})
	claim := Identity{kind: deviceIdentity, device: d, state: g.states.get(d.Name), claim: &hmacauth.Header{Credential: d.Name}}
	verified := Identity{kind: deviceIdentity, device: d, state: g.states.get(d.Name)}
	held := make(chan struct{})
	release := make(chan struct{})
	hold := g.readBody(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held <- struct{}{}
		<-release
	}))
	send := func(h http.Handler, id Identity) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, prepared(httptest.NewRequest("PATCH", "/api/v1/nodes/pico-u1/status", strings.NewReader(`{}`)), route{}, grant{rule: "node-status"}, id))
		return rec
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { send(hold, claim) })
		<-held
	}
	if n := g.unverified.used.Load(); n != 2*minUnverifiedCharge {
		t.Errorf("two small unverified bodies: got %d bytes held, want %d", n, 2*minUnverifiedCharge)
	}
	rec := send(g.readBody(&okHandler{}), claim)
	if rec.Code != 503 || rec.Header().Get("Retry-After") == "" || rec.Header().Get("Connection") != "close" {
		t.Errorf("over the budget: got %d Retry-After=%q Connection=%q, want 503 with Retry-After, closed", rec.Code, rec.Header().Get("Retry-After"), rec.Header().Get("Connection"))
	}
	if rec := send(g.readBody(&okHandler{}), verified); rec.Code != 200 {
		t.Errorf("a verified device's body: got %d, want 200 (not counted)", rec.Code)
	}
	close(release)
	wg.Wait()
	if n := g.unverified.used.Load(); n != 0 {
		t.Errorf("after the requests: got %d bytes held, want 0", n)
	}
}

// TestBodyRecycledOnlyAfterLastReader: the transport may read the request body after the handler has
// returned (net/http allows it: a RoundTrip can outlive the handler). The body's buffer must not go back
// to the pool, and then to another request, while it can still be read: a late read gets the request's
// own bytes or an error, never another request's. Run with -race: on a gateway that recycles the buffer
// when the handler returns, the late read races with the next request filling the same buffer.
func TestBodyRecycledOnlyAfterLastReader(t *testing.T) {
	type late struct {
		body     io.ReadCloser
		want     string
		readDone chan struct{}
	}
	lateReads := make(chan late, 1)
	transport := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		// What a transport does when it prepares to resend a body (HTTP/2 after GOAWAY, HTTP/1 on a
		// broken kept-alive connection): a fresh copy from GetBody, read later.
		var body io.ReadCloser
		if r.GetBody != nil {
			body, _ = r.GetBody()
		}
		want, _ := io.ReadAll(r.Body)
		if body != nil {
			lateReads <- late{body: body, want: string(want), readDone: make(chan struct{})}
		}
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(`{}`)), Request: r}, nil
	})
	d := dev("pico-1", registry.AuthToken)
	g := newTestGateway(t, Config{Registry: registryOf(d), Transport: transport, DeviceRate: 1e9, DeviceBurst: 1 << 30})
	send := func(i int) {
		body := fmt.Sprintf(`{"metadata":{"name":"pico-1","labels":{"n":"%06d"}}}`, i)
		req := httptest.NewRequest("POST", "/api/v1/nodes", strings.NewReader(body))
		req.RemoteAddr = "192.168.1.20:40000"
		req.Header.Set("Authorization", "Bearer tok-pico-1")
		req.Header.Set("Content-Type", "application/json")
		g.Handler().ServeHTTP(httptest.NewRecorder(), req)
	}
	for i := range 50 {
		send(i) // the handler has returned; the transport still holds a body to read
		l := <-lateReads
		go func() { // the transport's goroutine, reading late, while the next request runs
			defer close(l.readDone)
			got, err := io.ReadAll(l.body)
			_ = l.body.Close()
			if err == nil && string(got) != l.want {
				t.Errorf("late read: got %q, want the request's own body %q (or an error)", got, l.want)
			}
		}()
		send(1000 + i)
		<-lateReads // the second request's own late body, never read: closed below
		<-l.readDone
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
	in = prepared(in, Identity{kind: deviceIdentity, device: d}, grant{rule: "node"})
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

// TestRewriteShared: a request without a credential is forwarded as the shared identity, never as the
// gateway's own credential, whatever identity headers it sent.
func TestRewriteShared(t *testing.T) {
	g := newTestGateway(t, Config{SharedIdentity: true})
	in := httptest.NewRequest("GET", "/version", nil)
	in.Header.Set("Impersonate-User", "system:admin")
	in.Header.Add("Impersonate-Group", "system:masters")
	in = prepared(in, Identity{kind: sharedIdentity}, grant{rule: "version"})
	pr := &httputil.ProxyRequest{In: in, Out: in.Clone(in.Context())}
	g.rewrite(pr)
	if got := pr.Out.Header.Values("Impersonate-User"); len(got) != 1 || got[0] != SharedUser {
		t.Errorf("Impersonate-User: got %q, want [%s]", got, SharedUser)
	}
	if got := pr.Out.Header.Values("Impersonate-Group"); len(got) != 1 || got[0] != SharedGroup {
		t.Errorf("Impersonate-Group: got %q, want [%s]", got, SharedGroup)
	}
}

// TestRewriteStripsForwardingHeaders: headers that would put a client's words in the API server's audit
// log (its audit ID, a claimed client address) are not forwarded; X-Forwarded-For is the device's own
// address only.
func TestRewriteStripsForwardingHeaders(t *testing.T) {
	d := dev("pico-1", registry.AuthToken)
	g := newTestGateway(t, Config{Registry: registryOf(d)})
	in := httptest.NewRequest("GET", "/api/v1/nodes/pico-1", nil)
	in.RemoteAddr = "192.168.1.9:5000"
	spoofed := []string{"Audit-ID", "X-Real-IP", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port", "X-Forwarded-Prefix",
		"Forwarded", "Via", "True-Client-IP", "X-Client-IP", "X-Cluster-Client-IP", "X-Original-Forwarded-For", "CF-Connecting-IP", "Fastly-Client-IP"}
	for _, k := range spoofed {
		in.Header.Set(k, "10.9.9.9")
	}
	in = prepared(in, Identity{kind: deviceIdentity, device: d}, grant{rule: "node"})
	pr := &httputil.ProxyRequest{In: in, Out: in.Clone(in.Context())}
	g.rewrite(pr)
	for _, k := range spoofed {
		if k == "X-Forwarded-For" {
			continue
		}
		if v := pr.Out.Header.Values(k); len(v) > 0 {
			t.Errorf("%s: got %q forwarded, want it removed", k, v)
		}
	}
	if got := pr.Out.Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "192.168.1.9" {
		t.Errorf("X-Forwarded-For: got %q, want only the device's address", got)
	}
}

func TestCapWatchTimeout(t *testing.T) {
	tests := []struct{ raw, want string }{
		{"watch=1", "watch=1&timeoutSeconds=1800"},
		{"", "timeoutSeconds=1800"},
		{"watch=1&timeoutSeconds=60", "watch=1&timeoutSeconds=60"},
		{"watch=1&timeoutSeconds=1800", "watch=1&timeoutSeconds=1800"},
		{"watch=1&timeoutSeconds=86400&resourceVersion=5", "watch=1&timeoutSeconds=1800&resourceVersion=5"},
		{"watch=1&timeoutSeconds=0", "watch=1&timeoutSeconds=1800"},
		{"timeout%53econds=99999&watch=1", "timeoutSeconds=1800&watch=1"},
		{"watch=1&timeoutSeconds=abc", "watch=1&timeoutSeconds=abc"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			if got := capWatchTimeout(tt.raw, 30*time.Minute); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
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
