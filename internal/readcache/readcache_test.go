package readcache

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/picogate/picogate/internal/asdevice"
	"github.com/picogate/picogate/internal/registry"
)

// fakeAPI holds objects by path and who may read them, and counts reads.
type fakeAPI struct {
	mu      sync.Mutex
	objects map[string]string
	readers map[string]map[string]bool // path → users allowed
	reads   []string                   // "user path"
	fail    error
}

func newFakeAPI() *fakeAPI {
	return &fakeAPI{objects: map[string]string{}, readers: map[string]map[string]bool{}}
}

func (f *fakeAPI) put(path, body string, users ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objects[path] = body
	f.readers[path] = map[string]bool{}
	for _, u := range users {
		f.readers[path]["system:node:"+u] = true
	}
}

func (f *fakeAPI) deny(path, user string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.readers[path], "system:node:"+user)
}

func (f *fakeAPI) Do(_ context.Context, as asdevice.Identity, req asdevice.Request) (asdevice.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads = append(f.reads, as.User[0]+" "+req.Path)
	if f.fail != nil {
		return asdevice.Response{}, f.fail
	}
	body, ok := f.objects[req.Path]
	if !ok {
		return asdevice.Response{Code: 404, Body: []byte(`{"kind":"Status","code":404}`)}, nil
	}
	if !f.readers[req.Path][as.User[0]] {
		return asdevice.Response{Code: 403, Body: []byte(`{"kind":"Status","reason":"Forbidden","code":403}`)}, nil
	}
	return asdevice.Response{Code: 200, Body: []byte(body)}, nil
}

func (f *fakeAPI) takeReads() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.reads
	f.reads = nil
	return r
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func dev(name string) *registry.Device {
	return &registry.Device{Name: name, User: []string{"system:node:" + name}, Groups: []string{"system:nodes", "picogate:devices"}}
}

const (
	cmPath = "/api/v1/namespaces/default/configmaps/pico-config"
	cmBody = `{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"pico-config","namespace":"default","resourceVersion":"42","managedFields":[{"manager":"kubectl"}]},"data":{"memory_values":"[1,2,3]"}}`
)

func newCache(t *testing.T, api asdevice.Doer, clk *clock, tune ...func(*Config)) *Cache {
	t.Helper()
	cfg := Config{Upstream: api, MaxStaleness: 10 * time.Second, AuthzWindow: time.Minute, Now: clk.now}
	for _, f := range tune {
		f(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// get sends a GET and returns the answer; it fails the test if the cache did not take it.
func get(t *testing.T, c *Cache, d *registry.Device, path string, headers ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest("GET", path, nil)
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Set(headers[i], headers[i+1])
	}
	w := httptest.NewRecorder()
	if !c.ServeGet(w, r, d) {
		t.Fatalf("GET %s: got false, want it served by the cache", path)
	}
	return w
}

func TestReadsFromCache(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: time.Unix(1e9, 0)}
	api.put(cmPath, cmBody, "pico-1", "pico-2")
	c := newCache(t, api, clk)
	p1, p2 := dev("pico-1"), dev("pico-2")

	steps := []struct {
		name    string
		advance time.Duration
		d       *registry.Device
		headers []string
		code    int
		cache   string
		reads   []string
	}{
		{"first read goes upstream as the device", 0, p1, nil, 200, "miss", []string{"system:node:pico-1 " + cmPath}},
		{"again: from memory", time.Second, p1, nil, 200, "hit", nil},
		{"another device allowed but not yet asked: upstream", 0, p2, nil, 200, "miss", []string{"system:node:pico-2 " + cmPath}},
		{"now it too from memory", time.Second, p2, nil, 200, "hit", nil},
		{"If-None-Match with the ETag: 304", time.Second, p1, []string{"If-None-Match", `"42"`}, 304, "hit", nil},
		{"If-None-Match with another ETag: 200", 0, p1, []string{"If-None-Match", `"41", W/"40"`}, 200, "hit", nil},
		{"stale after 10s: upstream again", 10 * time.Second, p1, nil, 200, "miss", []string{"system:node:pico-1 " + cmPath}},
		{"refreshed by pico-1, served to pico-2 (allowed within the window)", 0, p2, []string{"If-None-Match", `"42"`}, 304, "hit", nil},
		{"pico-2's permission older than the window: upstream", 50 * time.Second, p2, nil, 200, "miss", []string{"system:node:pico-2 " + cmPath}},
	}
	for _, s := range steps {
		clk.add(s.advance)
		w := get(t, c, s.d, cmPath, s.headers...)
		if w.Code != s.code || w.Header().Get(HeaderCache) != s.cache {
			t.Errorf("%s: got %d %q, want %d %q", s.name, w.Code, w.Header().Get(HeaderCache), s.code, s.cache)
		}
		if got := api.takeReads(); strings.Join(got, ";") != strings.Join(s.reads, ";") {
			t.Errorf("%s: got upstream reads %q, want %q", s.name, got, s.reads)
		}
		if w.Header().Get("ETag") != `"42"` {
			t.Errorf("%s: got ETag %q, want \"42\"", s.name, w.Header().Get("ETag"))
		}
		switch {
		case s.code == 304 && w.Body.Len() != 0:
			t.Errorf("%s: 304 with a %d-byte body, want none", s.name, w.Body.Len())
		case s.code == 200 && (!strings.Contains(w.Body.String(), `"memory_values":"[1,2,3]"`) || strings.Contains(w.Body.String(), "managedFields")):
			t.Errorf("%s: got body %s, want the ConfigMap without managedFields", s.name, w.Body.String())
		}
	}
}

func TestNeverServesWhatTheDeviceMayNotRead(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: time.Unix(1e9, 0)}
	api.put(cmPath, cmBody, "pico-1")
	c := newCache(t, api, clk)
	p1, p9 := dev("pico-1"), dev("pico-9")
	get(t, c, p1, cmPath) // now cached

	w := get(t, c, p9, cmPath)
	if w.Code != 403 || strings.Contains(w.Body.String(), "memory_values") {
		t.Errorf("a device never allowed: got %d %s, want the API server's 403", w.Code, w.Body.String())
	}
	if w := get(t, c, p9, cmPath, "If-None-Match", `"42"`); w.Code != 403 {
		t.Errorf("a device never allowed, with the ETag: got %d, want 403 (not 304)", w.Code)
	}
	// Withdrawn in RBAC: served from memory until the window ends; refused from the first real read.
	api.deny(cmPath, "pico-1")
	clk.add(11 * time.Second) // stale: the next read is a real one
	if w := get(t, c, p1, cmPath); w.Code != 403 {
		t.Errorf("permission withdrawn, object stale: got %d, want 403", w.Code)
	}
	api.put(cmPath, cmBody, "pico-1", "pico-9") // fresh again, by pico-9
	get(t, c, p9, cmPath)
	api.deny(cmPath, "pico-1")
	if w := get(t, c, p1, cmPath); w.Code != 403 {
		t.Errorf("after a refusal, object fresh in memory: got %d, want 403 (the refusal dropped the permission)", w.Code)
	}
}

func TestForgetStopsCachedReadsAtOnce(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: time.Unix(1e9, 0)}
	nodePath := "/api/v1/nodes/pico-1"
	api.put(cmPath, cmBody, "pico-1")
	api.put(nodePath, `{"kind":"Node","metadata":{"name":"pico-1","resourceVersion":"7"}}`, "pico-1")
	c := newCache(t, api, clk)
	p1 := dev("pico-1")
	get(t, c, p1, cmPath)
	get(t, c, p1, nodePath)
	api.takeReads()

	c.Forget("pico-1", true) // rotated or revoked
	get(t, c, p1, cmPath)
	if got := api.takeReads(); len(got) != 1 {
		t.Errorf("after Forget: got upstream reads %q, want the read made again", got)
	}
	c.Forget("pico-1", false) // removed
	if n, _ := c.Len(); n != 1 {
		t.Errorf("after the device's removal: got %d objects, want 1 (its Node dropped, the ConfigMap kept)", n)
	}
}

func TestNotCachedReadsAreForwarded(t *testing.T) {
	c := newCache(t, newFakeAPI(), &clock{t: time.Unix(1e9, 0)})
	cases := []struct {
		name, method, target, accept string
		d                            *registry.Device
	}{
		{"a query", "GET", cmPath + "?resourceVersion=0", "", dev("pico-1")},
		{"a watch", "GET", "/api/v1/pods?watch=true", "", dev("pico-1")},
		{"a write", "PUT", cmPath, "", dev("pico-1")},
		{"another node", "GET", "/api/v1/nodes/pico-2", "", dev("pico-1")},
		{"another Lease", "GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/pico-2", "", dev("pico-1")},
		{"a ConfigMap list", "GET", "/api/v1/namespaces/default/configmaps", "", dev("pico-1")},
		{"a Secret", "GET", "/api/v1/namespaces/default/secrets/x", "", dev("pico-1")},
		{"protobuf", "GET", cmPath, "application/vnd.kubernetes.protobuf", dev("pico-1")},
		{"the shared identity", "GET", cmPath, "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.target, nil)
			if tc.accept != "" {
				r.Header.Set("Accept", tc.accept)
			}
			w := httptest.NewRecorder()
			if c.ServeGet(w, r, tc.d) || w.Body.Len() != 0 || len(w.Header()) != 0 {
				t.Errorf("got served (%d %s), want forwarded", w.Code, w.Body.String())
			}
		})
	}
}

func TestUpstreamFailures(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: time.Unix(1e9, 0)}
	c := newCache(t, api, clk)
	api.fail = errors.New("connection refused")
	if w := get(t, c, dev("pico-1"), cmPath); w.Code != 503 || w.Header().Get("Retry-After") == "" {
		t.Errorf("API server down: got %d (Retry-After %q), want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"))
	}
	api.fail = nil
	if w := get(t, c, dev("pico-1"), cmPath); w.Code != 404 {
		t.Errorf("no such object: got %d, want 404", w.Code)
	}
	unauthorized := asdevice.DoerFunc(func(context.Context, asdevice.Identity, asdevice.Request) (asdevice.Response, error) {
		return asdevice.Response{Code: 401, Body: []byte(`{}`)}, nil
	})
	if w := get(t, newCache(t, unauthorized, clk), dev("pico-1"), cmPath); w.Code != 503 {
		t.Errorf("the gateway's credential refused: got %d, want 503 (the device did nothing wrong)", w.Code)
	}
}

func TestByteBudgetAndSweep(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: time.Unix(1e9, 0)}
	api.put(cmPath, cmBody, "pico-1")
	small := newCache(t, api, clk, func(c *Config) { c.MaxBytes = 10 })
	get(t, small, dev("pico-1"), cmPath)
	if w := get(t, small, dev("pico-1"), cmPath); w.Code != 200 || w.Header().Get(HeaderCache) != "miss" {
		t.Errorf("over the byte budget: got %d %q, want 200 read through (miss)", w.Code, w.Header().Get(HeaderCache))
	}

	api.put(cmPath, cmBody, "pico-1", "pico-2")
	c := newCache(t, api, clk)
	get(t, c, dev("pico-2"), cmPath)
	get(t, c, dev("pico-1"), cmPath)
	if n, b := c.Len(); n != 1 || b == 0 {
		t.Fatalf("got %d objects, %d bytes, want 1 held", n, b)
	}
	// Stale but within the window: its body goes, the object stays, so the device's permission does.
	clk.add(20 * time.Second)
	c.sweep(clk.now())
	if n, b := c.Len(); n != 1 || b != 0 {
		t.Errorf("after a sweep of a stale object: got %d objects, %d bytes, want 1 without its body", n, b)
	}
	api.takeReads()
	if w := get(t, c, dev("pico-1"), cmPath); w.Header().Get(HeaderCache) != "miss" || len(api.takeReads()) != 1 {
		t.Errorf("after the sweep: got %q, want one read upstream (the body was let go)", w.Header().Get(HeaderCache))
	}
	// pico-2 was allowed before the sweep, within the window: pico-1's read serves it.
	if w := get(t, c, dev("pico-2"), cmPath); w.Header().Get(HeaderCache) != "hit" {
		t.Errorf("another device allowed before the sweep: got %q, want a hit (its permission survives a sweep)", w.Header().Get(HeaderCache))
	}
	clk.add(2 * time.Minute)
	c.sweep(clk.now())
	if n, b := c.Len(); n != 0 || b != 0 {
		t.Errorf("after the sweep: got %d objects, %d bytes, want none", n, b)
	}
	if _, ok := c.devices.Load("pico-1"); ok {
		t.Error("after the sweep: the device's expired permissions are still held")
	}
}

func TestObserveReplacesAHeldObject(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: time.Unix(1e9, 0)}
	nodePath := "/api/v1/nodes/pico-1"
	api.put(nodePath, `{"kind":"Node","metadata":{"name":"pico-1","resourceVersion":"7"}}`, "pico-1")
	c := newCache(t, api, clk)
	p1 := dev("pico-1")
	c.Observe(p1, nodePath, []byte(`{"kind":"Node","metadata":{"resourceVersion":"5"}}`)) // not held: ignored
	get(t, c, p1, nodePath)
	clk.add(9 * time.Second)
	c.Observe(p1, nodePath, []byte(`{"kind":"Node","metadata":{"name":"pico-1","resourceVersion":"8"}}`))
	clk.add(9 * time.Second)
	w := get(t, c, p1, nodePath)
	if w.Header().Get("ETag") != `"8"` || w.Header().Get(HeaderCache) != "hit" {
		t.Errorf("after a write's answer: got ETag %q (%s), want \"8\" from memory", w.Header().Get("ETag"), w.Header().Get(HeaderCache))
	}
}

func TestCacheable(t *testing.T) {
	for path, want := range map[string]bool{
		"/api/v1/nodes/pico-1": true,
		"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/pico-1": true,
		cmPath:                                            true,
		"/api/v1/namespaces/default/configmaps/":          false,
		"/api/v1/namespaces//configmaps/x":                false,
		"/api/v1/namespaces/default/configmaps/x/y":       false,
		"/api/v1/nodes/pico-1/status":                     false,
		"/api/v1/namespaces/default/secrets/pico-config":  false,
		"/api/v1/namespaces/kube-node-lease/configmaps/x": true,
	} {
		if got := Cacheable(path, "pico-1"); got != want {
			t.Errorf("Cacheable(%q): got %v, want %v", path, got, want)
		}
	}
}

func TestNewReportsEveryProblem(t *testing.T) {
	_, err := New(Config{MaxStaleness: -1, AuthzWindow: 2 * time.Hour, MaxBytes: -1})
	for _, want := range []string{"upstream", "staleness", "authorization window", "max bytes"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want an error naming %q", err, want)
		}
	}
}

func TestResultsAreCounted(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: time.Unix(1e9, 0)}
	api.put(cmPath, cmBody, "pico-1")
	c := newCache(t, api, clk)
	get(t, c, dev("pico-1"), cmPath)
	get(t, c, dev("pico-1"), cmPath)
	get(t, c, dev("pico-2"), cmPath)
	for result, want := range map[string]float64{"hit": 1, "miss": 1, "refused": 1, "unavailable": 0} {
		if got := counterValue(c.results.WithLabelValues(result)); got != want {
			t.Errorf("picogate_read_cache_requests_total{result=%q}: got %v, want %v", result, got, want)
		}
	}
	var m dto.Metric
	if err := c.Collectors()[1].(prometheus.Metric).Write(&m); err != nil || m.GetGauge().GetValue() != 1 {
		t.Errorf("objects gauge: got %v (%v), want 1", m.GetGauge().GetValue(), err)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
