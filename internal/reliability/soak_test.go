package reliability

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/gatewaytest"
	"github.com/picogate/picogate/internal/sim"
)

// soakSpec is one soak run: how many devices (a tenth of them the reference firmware's wire behaviour,
// the rest the device package's agent), for how long after they have converged, sampled how often.
type soakSpec struct {
	prefix   string
	devices  int
	duration time.Duration
	every    time.Duration
}

// sample is the gateway's process state at one moment.
type sample struct {
	at         time.Duration // since the measurement began
	rss        int64
	goroutines float64
	fds        int
	requests   uint64        // the fleet's requests so far
	scrape     time.Duration // how long the admin port took to serve /metrics
}

// trend is a least-squares line through samples: the projected change over the measured window.
func trend(xs []time.Duration, ys []float64) (slopePerSec, mean float64) {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		x := xs[i].Seconds()
		sx, sy, sxx, sxy = sx+x, sy+ys[i], sxx+x*x, sxy+x*ys[i]
	}
	if d := n*sxx - sx*sx; d != 0 {
		slopePerSec = (n*sxy - sx*sy) / d
	}
	return slopePerSec, sy / n
}

// TestFleetSteadyShort is the soak's short form for `make test`: 200 devices for 48 s once converged.
// The full one is TestSoak (-tags soak, make soak).
func TestFleetSteadyShort(t *testing.T) {
	runSoak(t, soakSpec{prefix: "steady-", devices: 200, duration: 48 * time.Second, every: 2 * time.Second})
}

// runSoak runs a fleet through the gateway for the spec's duration once every device has converged,
// sampling the gateway's RSS (/proc), goroutines (its /metrics) and open files. Both must stay flat —
// no growth trend over the window beyond a stated tolerance — and the fleet must see no error at all.
//
// The gateway runs with GOGC=25 (the environment wins over --gc-percent; --memory-limit keeps its default):
// at the fleet's pace (about 0.6 MB of garbage a second over a live heap of 15 to 30 MB) the gateway's
// default --gc-percent 400 collects only after four times the live heap of garbage, every few minutes, so
// a window shorter than that sees RSS climb towards the next collection whether or not anything is
// retained. Collected every few seconds, RSS follows what the gateway keeps, which is what the soak judges.
func runSoak(t *testing.T, s soakSpec) {
	gw := gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: cluster(t).AdminKubeconfig(), Args: []string{"--access-log=false"}, Env: []string{"GOGC=25"}})
	gc := metrics(t, gw)
	t.Logf("gateway collector: GOGC %.0f, GOMEMLIMIT %s", gc["go_gc_gogc_percent"], mib(int64(gc["go_gc_gomemlimit_bytes"])))
	creds := addDevices(t, s.prefix, s.devices)
	waitAuthenticated(t, gw, creds[len(creds)-1].Token)
	firmware := s.devices / 10
	start := time.Now()
	agents := startFleet(t, sim.Config{Gateway: gw.URL(), Credentials: creds[firmware:], Jitter: true, StartSpread: 10 * time.Second})
	fw := startFleet(t, sim.Config{Gateway: gw.URL(), Credentials: creds[:firmware], Mode: sim.ModeFirmware, Jitter: true, StartSpread: 10 * time.Second})
	ctx := context.Background()
	took, err := waitFor(3*time.Minute, time.Second, func() error { return agents.converged(ctx, t, start) })
	if err != nil {
		t.Fatalf("fleet not converged: %v", err)
	}
	t.Logf("%d agents and %d firmware devices converged %v after start", s.devices-firmware, firmware, took.Round(100*time.Millisecond))
	// One more cycle before measuring: every agent renews its Lease, every firmware device has a status
	// patch accepted, once more after convergence.
	agentsAt, fwAt := agents.progress(func(d sim.DeviceReport) uint64 { return d.LeaseRenewals }), fw.progress(func(d sim.DeviceReport) uint64 { return d.StatusPatches })
	if _, err := waitFor(time.Minute, time.Second, func() error {
		return errors.Join(agents.advanced(agentsAt, func(d sim.DeviceReport) uint64 { return d.LeaseRenewals }),
			fw.advanced(fwAt, func(d sim.DeviceReport) uint64 { return d.StatusPatches }))
	}); err != nil {
		t.Fatalf("one more cycle after convergence: %v", err)
	}

	measure := time.Now()
	t.Logf("machine load average (1, 5, 15 min) as the measurement begins: %s", loadAverage())
	t.Cleanup(func() { t.Logf("machine load average (1, 5, 15 min) at the end: %s", loadAverage()) })
	var samples []sample
	take := func() {
		m := mustProcMem(t, gw)
		began := time.Now()
		g := metrics(t, gw)["go_goroutines"]
		samples = append(samples, sample{at: time.Since(measure), rss: m.RSS, goroutines: g, fds: openFDs(t, gw),
			requests: agents.requests() + fw.requests(), scrape: time.Since(began)})
	}
	for take(); time.Since(measure) < s.duration; take() {
		time.Sleep(s.every)
	}
	errs := mergeErrors(agents.errors(), fw.errors())
	if len(errs) != 0 {
		t.Logf("the failing devices' last errors:\n%s", strings.Join(append(agents.lastErrors(), fw.lastErrors()...), "\n"))
	}
	notReady := agents.notReady()
	final := metrics(t, gw) // before the fleet stops: devices leaving mid-request are not the soak's
	repA, repF := agents.stop(), fw.stop()
	checkSoak(t, s, samples, errs, final)
	if len(notReady) > 0 {
		t.Errorf("%d agents not Ready at the end (%s)", len(notReady), head(notReady))
	}
	if repF != nil && (repF.OversizeResponses != 0 || repF.ChunkedResponses != 0) {
		t.Errorf("firmware devices: got %d oversize and %d chunked responses, want none", repF.OversizeResponses, repF.ChunkedResponses)
	}
	if repA != nil && repA.LeaseRenewalsLate != 0 {
		t.Errorf("agents: got %d late lease renewals, want none", repA.LeaseRenewalsLate)
	}
}

func mergeErrors(ms ...map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for _, m := range ms {
		for k, v := range m {
			out[k] += v
		}
	}
	return out
}

// checkSoak reports the samples and asserts flatness. The first quarter of the window is warm-up (the
// garbage collector's heap still finding its size). Over the rest, the median of the last third may
// exceed the median of the first third by at most 20% (or 16 MiB, whichever is more) for RSS, by 5% (or
// 30) for goroutines and open files: medians, so a passing wave (the fleet's watches renewing at their
// timeout) is not taken for growth, while a leak moves every sample. The least-squares trend is logged
// too. And the fleet sees no error, the gateway answers no 5xx.
func checkSoak(t *testing.T, s soakSpec, all []sample, errs map[string]uint64, final map[string]float64) {
	t.Helper()
	warm := all[0]
	samples := all[len(all)/4:]
	t.Logf("warm-up (first quarter, not judged): RSS %s → %s, goroutines %.0f → %.0f", mib(warm.rss), mib(samples[0].rss), warm.goroutines, samples[0].goroutines)
	xs := make([]time.Duration, len(samples))
	rss, gor, fds := make([]float64, len(samples)), make([]float64, len(samples)), make([]float64, len(samples))
	for i, p := range samples {
		xs[i], rss[i], gor[i], fds[i] = p.at, float64(p.rss), p.goroutines, float64(p.fds)
	}
	window := (samples[len(samples)-1].at - samples[0].at).Seconds()
	last := samples[len(samples)-1]
	rate := float64(last.requests-samples[0].requests) / window
	type series struct {
		name        string
		ys          []float64
		frac, floor float64
		unit        func(float64) string
	}
	for _, sr := range []series{
		{"RSS", rss, 0.20, 16 << 20, func(v float64) string { return mib(int64(v)) }},
		{"goroutines", gor, 0.05, 30, func(v float64) string { return fmt.Sprintf("%.0f", v) }},
		{"open files", fds, 0.05, 30, func(v float64) string { return fmt.Sprintf("%.0f", v) }},
	} {
		slope, mean := trend(xs, sr.ys)
		third := max(len(sr.ys)/3, 1)
		early, late := median(sr.ys[:third]), median(sr.ys[len(sr.ys)-third:])
		allowed := math.Max(sr.frac*mean, sr.floor)
		sorted := append([]float64(nil), sr.ys...)
		sort.Float64s(sorted)
		t.Logf("%s over %v: min %s, median %s, max %s; median of the first third %s, of the last %s (allowed +%s); least-squares trend %+.4g/s",
			sr.name, time.Duration(window*float64(time.Second)).Round(time.Second), sr.unit(sorted[0]), sr.unit(median(sr.ys)), sr.unit(sorted[len(sorted)-1]),
			sr.unit(early), sr.unit(late), sr.unit(allowed), slope)
		if late-early > allowed {
			t.Errorf("%s grows: median %s in the last third against %s in the first, want at most +%s (samples %v)", sr.name, sr.unit(late), sr.unit(early), sr.unit(allowed), sr.ys)
		}
	}
	var slowest time.Duration
	for _, p := range all {
		slowest = max(slowest, p.scrape)
	}
	t.Logf("%d devices, %d requests during the window (%.1f/s); fleet errors %v; slowest /metrics scrape %v", s.devices, last.requests-samples[0].requests, rate, errs, slowest.Round(time.Millisecond))
	if len(errs) != 0 {
		t.Errorf("fleet errors: got %v, want none", errs)
	}
	fivexx, upErrs := sumMetric(final, "picogate_requests_total", `code="5`), sumMetric(final, "picogate_upstream_errors_total")
	t.Logf("gateway: %.0f requests answered 5xx, %.0f upstream errors, %.0f requests in all", fivexx, upErrs, sumMetric(final, "picogate_requests_total"))
	if fivexx != 0 || upErrs != 0 {
		t.Errorf("gateway: got %.0f 5xx answers and %.0f upstream errors, want none", fivexx, upErrs)
	}
}

func median(ys []float64) float64 {
	s := append([]float64(nil), ys...)
	sort.Float64s(s)
	return s[len(s)/2]
}
