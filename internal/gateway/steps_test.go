package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/registry"
	"github.com/picogate/picogate/internal/status"
)

// prepared returns r carrying what the steps before the one under test would have handed on: always a
// record, plus each value given. A step tested alone gets exactly the values it reads, so a step that
// reads one more fails its test (the getter panics).
func prepared(r *http.Request, values ...any) *http.Request {
	r = r.WithContext(context.WithValue(r.Context(), exchangeKey, &exchange{rec: record{start: time.Now()}}))
	for _, v := range values {
		switch v := v.(type) {
		case netip.Addr:
			r = with(r, clientKey, v)
		case route:
			r = with(r, routeKey, v)
		case Identity:
			r = with(r, identityKey, v)
		case grant:
			r = with(r, grantKey, v)
		case charge:
			r = with(r, chargeKey, v)
		case Body:
			r = with(r, bodyKey, v)
		default:
			panic(fmt.Sprintf("prepared: no step hands on a %T", v))
		}
	}
	return r
}

// grantAll stands for authorize in tests of the steps around it: every request is allowed (the policy
// has its own tests).
func grantAll(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, with(r, grantKey, grant{rule: "test"}))
	})
}

// signedLine is the part of the request path a signed request's authentication spans: the header in
// authenticate, the rate charge, the body, the signature in verify. Every request is granted.
func signedLine(g *Gateway, next http.Handler) http.Handler {
	return chain(next, g.observe, clientAnywhere, g.route, g.authenticate, grantAll, g.deviceRate, g.readBody, g.verify)
}

// clientAnywhere stands for sourceCheck: the client is whatever RemoteAddr says, allowed.
func clientAnywhere(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, with(r, clientKey, netip.MustParseAddrPort(r.RemoteAddr).Addr().Unmap()))
	})
}

func TestRoute(t *testing.T) {
	g := newTestGateway(t, Config{SharedIdentity: true, Local: []LocalRoute{{Method: "POST", Path: LocalPrefix + "enroll", Name: "enroll", Handler: &okHandler{}}}})
	tests := []struct {
		name, method, target string
		want                 int
		wantLocal            string // "" for forwarded
	}{
		{"forwarded", "GET", "/api/v1/nodes/pico-1", 200, ""},
		{"time", "GET", "/picogate/v1/time", 200, "time"},
		{"configured endpoint", "POST", "/picogate/v1/enroll", 200, "enroll"},
		{"wrong method", "GET", "/picogate/v1/enroll", 404, ""},
		{"unknown", "GET", "/picogate/v1/nothing", 404, ""},
		{"dot dot", "GET", "/picogate/v1/../v1/time", 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got *route
			next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { rt := routeFrom(r); got = &rt })
			rec := httptest.NewRecorder()
			req := prepared(httptest.NewRequest(tt.method, tt.target, nil))
			g.route(next).ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, tt.want)
			}
			if tt.want != 200 {
				if got != nil {
					t.Error("a refused request reached the next step")
				}
				return
			}
			name := ""
			if got.local != nil {
				name = got.local.Name
			}
			if name != tt.wantLocal {
				t.Errorf("local endpoint: got %q, want %q", name, tt.wantLocal)
			}
			if rule := recordFrom(req).rule; rule != tt.wantLocal {
				t.Errorf("rule recorded: got %q, want %q", rule, tt.wantLocal)
			}
		})
	}
}

func TestDispatch(t *testing.T) {
	g := newTestGateway(t, Config{SharedIdentity: true})
	local, forwarded := &okHandler{}, &okHandler{}
	h := g.dispatch(forwarded)
	h.ServeHTTP(httptest.NewRecorder(), prepared(httptest.NewRequest("GET", "/picogate/v1/x", nil), route{local: &LocalRoute{Name: "x", Handler: local}}))
	h.ServeHTTP(httptest.NewRecorder(), prepared(httptest.NewRequest("GET", "/version", nil), route{}))
	if local.reached != 1 || forwarded.reached != 1 {
		t.Errorf("got local %d, forwarded %d; want each once", local.reached, forwarded.reached)
	}
}

// TestDeadline: each kind of request gets its own bound on what follows; a watch also ends when the
// gateway shuts down.
func TestDeadline(t *testing.T) {
	g := newTestGateway(t, Config{SharedIdentity: true, UpstreamTimeout: 3 * time.Second, LocalTimeout: 7 * time.Second, MaxWatchTimeout: time.Minute})
	tests := []struct {
		name  string
		route route
		grant grant
		want  time.Duration
	}{
		{"forwarded", route{}, grant{}, 3 * time.Second},
		{"local", route{local: &LocalRoute{Name: "time"}}, grant{rule: "time"}, 7 * time.Second},
		{"watch", route{}, grant{watch: true}, time.Minute + 3*time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got time.Duration
			start := time.Now()
			g.deadline(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				d, ok := r.Context().Deadline()
				if !ok {
					t.Fatal("got no deadline")
				}
				got = d.Sub(start)
			})).ServeHTTP(httptest.NewRecorder(), prepared(httptest.NewRequest("GET", "/", nil), tt.route, tt.grant))
			if got < tt.want || got > tt.want+time.Second {
				t.Errorf("got a deadline %v away, want %v", got, tt.want)
			}
		})
	}
	ended := make(chan error)
	go g.deadline(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		ended <- r.Context().Err()
	})).ServeHTTP(httptest.NewRecorder(), prepared(httptest.NewRequest("GET", "/", nil), route{}, grant{watch: true}))
	g.EndWatches()
	if err := <-ended; err != context.Canceled {
		t.Errorf("a watch at shutdown: got %v, want it canceled", err)
	}
}

// TestSourceLimit: requests without a device credential are limited per source address — rate, and
// requests in flight — while a device's requests and other addresses are not affected.
func TestSourceLimit(t *testing.T) {
	g := newTestGateway(t, Config{SharedIdentity: true, DeviceRate: 0.001, DeviceBurst: 3, SourceMaxInFlight: 2})
	a, b := netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("192.168.1.11")
	release := make(chan struct{})
	var held sync.WaitGroup
	hold := g.sourceLimit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held.Done()
		<-release
	}))
	send := func(h http.Handler, client netip.Addr, id Identity) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, prepared(httptest.NewRequest("GET", "/version", nil), client, id, grant{rule: "version"}))
		return rec
	}
	shared := Identity{kind: sharedIdentity}
	var done sync.WaitGroup
	held.Add(2)
	for range 2 {
		done.Go(func() { send(hold, a, shared) })
	}
	held.Wait()
	ok := g.sourceLimit(&okHandler{})
	if rec := send(ok, a, shared); rec.Code != 429 || !strings.Contains(rec.Body.String(), "in flight") || rec.Header().Get("Retry-After") == "" {
		t.Errorf("third in flight from %s: got %d %s, want 429 with Retry-After", a, rec.Code, rec.Body)
	}
	if rec := send(ok, a, Identity{kind: deviceIdentity, device: dev("pico-1", registry.AuthToken)}); rec.Code != 200 {
		t.Errorf("a device from the same address: got %d, want 200 (limited per device instead)", rec.Code)
	}
	close(release)
	done.Wait()
	// a's burst of 3 is spent: two above, then one more; the fourth waits for the rate.
	if rec := send(ok, a, shared); rec.Code != 200 {
		t.Errorf("third request from %s: got %d, want 200", a, rec.Code)
	}
	if rec := send(ok, a, Identity{}); rec.Code != 429 || !strings.Contains(rec.Body.String(), "rate limit") {
		t.Errorf("over the rate from %s: got %d %s, want 429 (anonymous endpoints share the source's budget)", a, rec.Code, rec.Body)
	}
	if rec := send(ok, b, shared); rec.Code != 200 {
		t.Errorf("another address: got %d, want 200", rec.Code)
	}
}

// TestSourcesBounded: the per-source map holds at most MaxSources addresses; idle ones make room (looked
// for at most once a second), and while every one is busy a new address is refused with 503.
func TestSourcesBounded(t *testing.T) {
	s := newSources(2, 1, 1, 1)
	now := time.Now()
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 168, 0, byte(i)}) }
	st1, e := s.acquire(addr(1), now)
	if e != nil {
		t.Fatal(e)
	}
	st2, e := s.acquire(addr(2), now)
	if e != nil {
		t.Fatal(e)
	}
	if _, e := s.acquire(addr(3), now.Add(2*time.Second)); e == nil || e.Code != 503 {
		t.Fatalf("a third address while two are busy: got %v, want 503", e)
	}
	s.release(st1)
	s.release(st2)
	if _, e := s.acquire(addr(4), now.Add(2500*time.Millisecond)); e == nil {
		t.Fatal("within a second of a sweep that found no room: got room, want the sweep not repeated yet")
	}
	if _, e := s.acquire(addr(3), now.Add(4*time.Second)); e != nil {
		t.Fatalf("a third address once the others are idle and refilled: got %v, want room", e)
	}
	if n := s.len(); n != 1 {
		t.Errorf("sources held: got %d, want 1 (the idle ones dropped)", n)
	}
}

// TestRefuse: every refusal is the Status of its error with its Retry-After, is recorded for the access
// log, and closes the connection exactly when the body has not been read.
func TestRefuse(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		read      bool
		wantClose bool
	}{
		{"no body", "", false, false},
		{"body unread", "{}", false, true},
		{"body read", "{}", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req := prepared(httptest.NewRequest("POST", "/api/v1/nodes", body))
			if tt.read {
				req = with(req, bodyKey, Body{b: []byte(tt.body)})
			}
			rec := httptest.NewRecorder()
			Refuse(rec, req, &status.Error{Code: 429, Message: "slow down", RetryAfter: 2 * time.Second})
			if rec.Code != 429 || rec.Header().Get("Retry-After") != "2" {
				t.Errorf("got %d Retry-After=%q, want 429 and 2", rec.Code, rec.Header().Get("Retry-After"))
			}
			if got := rec.Header().Get("Connection") == "close"; got != tt.wantClose {
				t.Errorf("Connection: close: got %v, want %v", got, tt.wantClose)
			}
			if got := recordFrom(req).reason; got != "slow down" {
				t.Errorf("reason recorded: got %q, want the message", got)
			}
		})
	}
}

// TestInspect: the checks see the request's content and the first refusal answers it.
func TestInspect(t *testing.T) {
	var seen []string
	check := func(name string, refuse bool) Check {
		return func(in *Inspection) *status.Error {
			seen = append(seen, name+":"+in.Rule+":"+string(in.Body))
			if refuse {
				return &status.Error{Code: 403, Message: name + " says no"}
			}
			return nil
		}
	}
	g := newTestGateway(t, Config{SharedIdentity: true, Checks: []Check{check("a", false), check("b", true), check("c", false)}})
	next := &okHandler{}
	rec := httptest.NewRecorder()
	g.inspect(next).ServeHTTP(rec, prepared(httptest.NewRequest("POST", "/api/v1/nodes", nil), route{}, grant{rule: "node-create"}, Identity{kind: sharedIdentity}, Body{b: []byte(`{"x":1}`)}))
	if rec.Code != 403 || next.reached != 0 || !strings.Contains(rec.Body.String(), "b says no") {
		t.Errorf("got %d %s (next reached %d), want b's 403 and nothing forwarded", rec.Code, rec.Body, next.reached)
	}
	if want := []string{`a:node-create:{"x":1}`, `b:node-create:{"x":1}`}; !slices.Equal(seen, want) {
		t.Errorf("checks run: got %q, want %q (c never)", seen, want)
	}
}
