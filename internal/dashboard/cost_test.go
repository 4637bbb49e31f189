package dashboard

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// fleet5000 is a dashboard of n devices, each with full rings and a few refusals, as after a busy hour.
func fleet5000(t testing.TB, n int) (*Dashboard, *clock) {
	t.Helper()
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	reg := newMemRegistry()
	for i := range n {
		reg.set(tokenDevice(fmt.Sprintf("pico-%05d", i)))
	}
	d := newTestDashboard(t, reg, clk)
	for i := range n {
		name := fmt.Sprintf("pico-%05d", i)
		for j := range d.cfg.RequestsPerDevice + d.cfg.RefusalsPerDevice {
			e := ev(name, clk.now().Add(-time.Duration(j)*time.Second), 200)
			e.Path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/" + name
			e.UserAgent = "picogate-device/0.1.0 (rp2040; fw 2026.11)"
			e.Client = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
			if j%3 == 0 {
				e.Status, e.Rule, e.Reason = 403, "none", "no rule allows GET /api/v1/pods for node "+name
			}
			d.Record(e)
		}
	}
	return d, clk
}

// TestFleetCosts measures what docs/dashboard.md states for a fleet of 5,000: the memory of the
// device states, the page's weight, the first message of the live stream and a typical delta.
func TestFleetCosts(t *testing.T) {
	const n = 5000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	d, clk := fleet5000(t, n)
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	always, refused := DeviceBytes(Config{})
	t.Logf("device state: %d bytes each (%d requests), %d more after a first refusal (%d refusals); %d devices, all with refusals: %.1f MiB computed, %.1f MiB heap measured (with the test registry and the shared texts)",
		always, d.cfg.RequestsPerDevice, refused, d.cfg.RefusalsPerDevice, n, float64((always+refused)*n)/(1<<20), float64(heap)/(1<<20))
	if always > 2<<10 {
		t.Errorf("device state: got %d bytes, want at most 2 KiB", always)
	}
	if refused > 1<<10 {
		t.Errorf("refusals ring: got %d bytes, want at most 1 KiB", refused)
	}

	var assetBytes int
	for _, f := range []string{"index.html", "app.js", "app.css"} {
		b, _ := assets.ReadFile("assets/" + f)
		assetBytes += len(b)
	}
	t.Logf("page: %d bytes of HTML, JavaScript and CSS (uncompressed, no other request)", assetBytes)

	var st streamState
	q := ParseQuery(nil)
	first, _ := st.next(d.snapshot().page(q))
	firstJSON, _ := json.Marshal(first)
	t.Logf("live stream, first message (%d of %d rows): %d bytes", len(first.Rows), n, len(firstJSON))
	if len(firstJSON) > 128<<10 {
		t.Errorf("first message: got %d bytes, want at most 128 KiB", len(firstJSON))
	}

	// A second later, 10 of the 100 devices on the page and 1,000 elsewhere made a request.
	clk.add(time.Second)
	for i := range 1000 {
		d.Record(ev(fmt.Sprintf("pico-%05d", i*5), clk.now(), 200))
	}
	for i := range 10 {
		d.Record(ev(fmt.Sprintf("pico-%05d", i*7+1), clk.now(), 200))
	}
	dl, changed := st.next(d.snapshot().page(q))
	dlJSON, _ := json.Marshal(dl)
	t.Logf("live stream, a delta with %d changed rows on the page: %d bytes", len(dl.Rows), len(dlJSON))
	onPage := map[int]bool{}
	for i := range 20 {
		onPage[i*5] = true // pico-00000…00095 by fives
	}
	for i := range 10 {
		onPage[i*7+1] = true
	}
	if !changed || len(dl.Rows) != len(onPage) {
		t.Errorf("delta: got %d rows (changed %v), want %d", len(dl.Rows), changed, len(onPage))
	}
	clk.add(time.Second)
	if idle, changed := st.next(d.snapshot().page(q)); changed && len(idle.Rows) > 0 {
		t.Errorf("with no request: got %d rows, want none", len(idle.Rows))
	}
}

// BenchmarkRecord is the gateway's cost per request, with every CPU recording for its own devices.
func BenchmarkRecord(b *testing.B) {
	d, clk := fleet5000(b, 5000)
	evs := make([]Event, 5000)
	for i := range evs {
		evs[i] = ev(fmt.Sprintf("pico-%05d", i), clk.now(), 200)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			d.Record(evs[i%len(evs)])
			i += 7
		}
	})
}

// BenchmarkStreamTick is one live stream's work per tick with 5,000 devices: the snapshot (shared by
// every stream of the tick), filtering, sorting, the page and the delta.
func BenchmarkStreamTick(b *testing.B) {
	d, clk := fleet5000(b, 5000)
	for _, sort := range []string{"name", "seen"} {
		b.Run(sort, func(b *testing.B) {
			var st streamState
			q := Query{Sort: sort, Limit: 100, QuietAfter: defaultQuietAfter}
			b.ReportAllocs()
			for b.Loop() {
				clk.add(time.Second)
				st.next(d.snapshot().page(q))
			}
		})
	}
}
