package dashboard

import (
	"crypto/sha256"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/registry"
)

// memRegistry is an in-memory device registry with the methods the dashboard reads.
type memRegistry struct {
	mu sync.RWMutex
	m  map[string]*registry.Device
}

func newMemRegistry(devs ...*registry.Device) *memRegistry {
	r := &memRegistry{m: map[string]*registry.Device{}}
	for _, d := range devs {
		r.m[d.Name] = d
	}
	return r
}

func (r *memRegistry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.m))
	for n := range r.m {
		out = append(out, n)
	}
	return out
}

func (r *memRegistry) ByName(name string) (*registry.Device, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.m[name]
	return d, ok
}

func (r *memRegistry) set(d *registry.Device) {
	r.mu.Lock()
	r.m[d.Name] = d
	r.mu.Unlock()
}

func tokenDevice(name string) *registry.Device {
	return &registry.Device{Name: name, Auth: registry.AuthToken, TokenHash: sha256.Sum256([]byte("pgt_secret-" + name)), Created: time.Unix(1_700_000_000, 0)}
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestDashboard(t testing.TB, reg Registry, clk *clock) *Dashboard {
	t.Helper()
	d, err := New(Config{Registry: reg, Now: clk.now, Tick: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func ev(device string, at time.Time, status int) Event {
	return Event{Start: at, Duration: 3 * time.Millisecond, Device: device, Auth: "token", Method: "GET",
		Path: "/api/v1/nodes/" + device, Status: status, Rule: "node-get", Client: netip.MustParseAddr("192.168.1.20"), UserAgent: "pico-fw/1.2"}
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{RequestsPerDevice: -1, Interval: time.Millisecond, Tick: 5 * time.Second, MaxStreams: -1})
	if err == nil {
		t.Fatal("got no error, want one")
	}
	for _, want := range []string{"registry is required", "requests per device", "chart interval", "stream tick", "max streams"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to mention %q", err, want)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name string
		ev   Event
		want Class
	}{
		{"forwarded 200", Event{Status: 200}, ClassOK},
		{"forwarded 404", Event{Status: 404}, ClassAPI4xx},
		{"forwarded 500", Event{Status: 500}, ClassAPI5xx},
		{"auth", Event{Status: 401, Rule: "auth", Reason: "authentication failed: unknown"}, ClassAuth},
		{"registry not synced", Event{Status: 503, Rule: "auth", Reason: "the device registry has not been loaded yet"}, ClassAuth},
		{"policy", Event{Status: 403, Rule: "node-other", Reason: "no rule allows GET /api/v1/nodes/x"}, ClassPolicy},
		{"shape", Event{Status: 400, Rule: "path", Reason: "ambiguous path"}, ClassPolicy},
		{"source", Event{Status: 403, Rule: "source", Reason: "source address 8.8.8.8 is not allowed"}, ClassSource},
		{"rate limit", Event{Status: 429, Rule: "node-get", Reason: "rate limit exceeded", RateLimited: true}, ClassRateLimit},
		{"overload", Event{Status: 503, Rule: "node-get", Reason: "gateway is at its limit of concurrent requests"}, ClassOverload},
		{"upstream", Event{Status: 503, Rule: "node-get", Reason: "upstream: timeout", UpstreamError: true}, ClassUpstream},
		{"upstream by reason", Event{Status: 502, Rule: "node-get", Reason: "upstream: refused"}, ClassUpstream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(&tc.ev); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRingsKeepTheLastN(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	reg := newMemRegistry(tokenDevice("pico-1"))
	d := newTestDashboard(t, reg, clk)
	for i := range 50 {
		e := ev("pico-1", clk.now().Add(time.Duration(i)*time.Second), 200)
		e.Path = "/p/" + strings.Repeat("x", i%3) + "/" + string(rune('a'+i%26))
		if i%2 == 1 {
			e.Status, e.Rule, e.Reason = 403, "node-other", "refusal "+string(rune('a'+i%26))
		}
		d.Record(e)
	}
	v, ok := d.Device("pico-1")
	if !ok {
		t.Fatal("device not found")
	}
	if got, want := len(v.Requests), d.cfg.RequestsPerDevice; got != want {
		t.Errorf("requests: got %d, want %d", got, want)
	}
	if got, want := len(v.Refusals), d.cfg.RefusalsPerDevice; got != want {
		t.Errorf("refusals: got %d, want %d", got, want)
	}
	if !slices.IsSortedFunc(v.Requests, func(a, b RequestView) int { return int(b.At - a.At) }) {
		t.Errorf("requests are not newest first: %+v", v.Requests)
	}
	if got, want := v.Requests[0].At, clk.now().Add(49*time.Second).UnixMilli(); got != want {
		t.Errorf("newest request at %d, want %d", got, want)
	}
	if got, want := v.Refusals[0].Reason, "refusal "+string(rune('a'+49%26)); got != want {
		t.Errorf("newest refusal: got %q, want %q", got, want)
	}
	if v.Row.Requests != 50 || v.Row.Classes[ClassOK] != 25 || v.Row.Classes[ClassPolicy] != 25 {
		t.Errorf("counts: got %d requests, classes %v; want 50, 25 ok, 25 policy", v.Row.Requests, v.Row.Classes)
	}
	if v.Row.LastRefusal != v.Refusals[0].Reason || v.Row.LastRule != "node-other" {
		t.Errorf("last refusal: got %q [%s], want %q [node-other]", v.Row.LastRefusal, v.Row.LastRule, v.Refusals[0].Reason)
	}
}

func TestRecordAllocatesNothing(t *testing.T) {
	clk := &clock{t: time.Now()}
	d := newTestDashboard(t, newMemRegistry(tokenDevice("pico-1")), clk)
	e := ev("pico-1", clk.now(), 200)
	refused := ev("pico-1", clk.now(), 403)
	refused.Reason, refused.Rule = "no rule allows GET /api/v1/secrets for node pico-1", "none"
	d.Record(e)
	anon := e
	anon.Device = ""
	for _, tc := range []struct {
		name string
		ev   Event
	}{{"forwarded", e}, {"refused", refused}, {"anonymous", anon}} {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, func() { d.Record(tc.ev) }); n != 0 {
				t.Errorf("got %v allocations per Record, want 0", n)
			}
		})
	}
}

func TestDeviceStateRemovedWithTheDevice(t *testing.T) {
	clk := &clock{t: time.Now()}
	reg := newMemRegistry(tokenDevice("pico-1"), tokenDevice("pico-2"))
	d := newTestDashboard(t, reg, clk)
	d.Record(ev("pico-1", clk.now(), 200))
	d.Record(ev("pico-2", clk.now(), 200))
	reg.mu.Lock()
	delete(reg.m, "pico-2")
	reg.mu.Unlock()
	d.stats.retain(func(name string) bool { _, ok := reg.ByName(name); return ok })
	if got := d.stats.len(); got != 1 {
		t.Errorf("got %d device states, want 1", got)
	}
}

func TestPercentile(t *testing.T) {
	var b [latBuckets]uint64
	if got := percentile(b[:], 0.99); got != 0 {
		t.Errorf("empty: got %v, want 0", got)
	}
	for _, tc := range []struct {
		d         time.Duration
		lo, hi    float64
		bucketIdx int
	}{
		{100 * time.Microsecond, 0, 0.25, 0},
		{250 * time.Microsecond, 0, 0.25, 0},
		{251 * time.Microsecond, 0.25, 0.5, 1},
		{3 * time.Millisecond, 2, 4, 4},
		{time.Hour, 0, 0, latBuckets - 1},
	} {
		if got := latBucket(tc.d); got != tc.bucketIdx {
			t.Errorf("latBucket(%v): got %d, want %d", tc.d, got, tc.bucketIdx)
		}
	}
	b[latBucket(time.Millisecond)] = 990 // (0.5, 1] ms
	b[latBucket(40*time.Millisecond)] = 10
	if got := percentile(b[:], 0.99); got <= 0.5 || got > 1 {
		t.Errorf("p99 of 990 at ≤1ms and 10 at 40ms: got %vms, want within (0.5, 1]", got)
	}
	b[latBucket(40*time.Millisecond)] = 100
	if got := percentile(b[:], 0.99); got <= 32 || got > 64 {
		t.Errorf("p99 with 100 of 1090 at 40ms: got %vms, want within (32, 64]", got)
	}
}

func TestHistoryRing(t *testing.T) {
	h := newHistory(10*time.Second, 3)
	base := time.Unix(1_800_000_000, 0)
	for i := range 5 {
		for range 10 * (i + 1) {
			h.cur.add(&Event{Status: 200, Duration: time.Millisecond}, ClassOK)
		}
		h.cur.add(&Event{Status: 503, UpstreamError: true}, ClassUpstream)
		h.rotate(base.Add(time.Duration(i)*10*time.Second), i, 5)
	}
	pts := h.snapshot()
	if len(pts) != 3 {
		t.Fatalf("got %d points, want 3", len(pts))
	}
	for i, p := range pts {
		want := float64(10*(i+3)) / 10
		if p.PerSecond[status2xx] != want || p.PerSecond[status5xx] != 0.1 || p.Upstream != 1 || p.Ready != i+2 {
			t.Errorf("point %d: got %+v, want %v/s 2xx, 0.1/s 5xx, 1 upstream, %d ready", i, p, want, i+2)
		}
	}
}
