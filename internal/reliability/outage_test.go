package reliability

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/gatewaytest"
	"github.com/picogate/picogate/internal/sim"
)

// The bounds the issue sets for an API server outage.
const (
	probeInterval = 250 * time.Millisecond // 4 requests/s per probe device, within the default rate limit
	maxDeviceWait = 5 * time.Second        // a device is answered within this, whatever the upstream does
	maxReadyAgain = 5 * time.Second        // /readyz is true again this soon after the API server is
)

// TestAPIServerOutageUnderLoad kills kube-apiserver while a simulated fleet and strict probes run
// through the gateway, keeps it down for a few seconds and starts it again. During the outage every
// device request is answered within 5 s with 503 and Retry-After, /readyz turns false, an open watch
// ends (the device is not left in silence); afterwards /readyz is true within 5 s of the API server and
// every device re-converges (Lease renewed, Node Ready) with no manual step.
func TestAPIServerOutageUnderLoad(t *testing.T) {
	c := cluster(t)
	// Every request forwarded: what the gateway answers from memory (heartbeats within the Lease renew
	// interval, cached reads within their staleness bound) stays 2xx for those bounds into an outage, as
	// docs/heartbeat.md says; its own outage test is in e2e/heartbeat_test.go.
	gw := startGateway(t, "", "--heartbeat-translation=false", "--read-cache=false")
	creds := addDevices(t, "outage-", 100)
	probes := addDevices(t, "outage-probe-", 4)
	waitAuthenticated(t, gw, probes[len(probes)-1].Token)

	start := time.Now()
	fl := startFleet(t, sim.Config{Gateway: gw.URL(), Credentials: creds, Jitter: true, StartSpread: 5 * time.Second})
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for _, p := range probes {
		wg.Go(func() {
			probe{addr: fixedAddr(gw.Addr), name: p.Name, token: p.Token, interval: probeInterval, rec: rec}.run(ctx)
		})
	}
	if took, err := waitFor(90*time.Second, 500*time.Millisecond, func() error { return fl.converged(ctx, t, start) }); err != nil {
		t.Fatalf("fleet not converged before the fault: %v", err)
	} else {
		t.Logf("%d devices converged %v after start", len(creds), took.Round(100*time.Millisecond))
	}
	w, err := openWatch(gw.Addr, probes[0].Token, probes[0].Name)
	if err != nil || w.code != http.StatusOK {
		t.Fatalf("opening a watch: %v (status %d)", err, w.code)
	}

	killing := time.Now()
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = c.StartAPIServer(context.Background())
		}
	})
	watchEnded := w.waitEnd(maxDeviceWait)
	notReadyAfter, notReadyErr := waitFor(10*time.Second, 50*time.Millisecond, func() error {
		if code, _ := readyz(gw); code == http.StatusServiceUnavailable {
			return nil
		}
		return errors.New("/readyz still 200")
	})
	time.Sleep(time.Until(killed.Add(6 * time.Second)))

	restartBegan := time.Now()
	if err := c.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	restarted = true
	back := time.Now()
	readyAgain, readyErr := waitFor(2*maxReadyAgain, 20*time.Millisecond, func() error {
		if gw.Ready() {
			return nil
		}
		return errors.New("/readyz not 200")
	})
	reconverged, convErr := waitFor(120*time.Second, 500*time.Millisecond, func() error { return fl.converged(ctx, t, back) })
	time.Sleep(2 * time.Second) // probes after recovery
	cancel()
	wg.Wait()
	rep := fl.stop()

	// The outage, as the figures of docs/reliability.md.
	rs := rec.snapshot()
	outage := between(rs, killed, restartBegan)
	starting := between(rs, restartBegan, back)
	recovery := between(rs, back, back.Add(maxReadyAgain))
	after := between(rs, back.Add(reconverged), time.Now())
	t.Logf("API server down %v (killed → restart began), restart took %v", restartBegan.Sub(killed).Round(time.Millisecond), back.Sub(restartBegan).Round(time.Millisecond))
	t.Logf("probe requests: %d in all (%s); during the outage %d (%s), slowest answer %v; while the API server started %d (%s), slowest %v; in the %v after it was ready %d (%s), slowest %v",
		len(rs), formatTally(tally(rs)), len(outage), formatTally(tally(outage)), maxDur(outage).Round(time.Millisecond),
		len(starting), formatTally(tally(starting)), maxDur(starting).Round(time.Millisecond),
		maxReadyAgain, len(recovery), formatTally(tally(recovery)), maxDur(recovery).Round(time.Millisecond))
	t.Logf("/readyz false %v after the kill; ready again %v after the API server; fleet re-converged %v after it",
		notReadyAfter.Round(10*time.Millisecond), readyAgain.Round(10*time.Millisecond), reconverged.Round(100*time.Millisecond))
	if rep != nil {
		t.Logf("fleet: %d requests, errors %v (the outage's), %d/%d ready at the end", rep.Requests, rep.Errors, rep.DevicesReady, rep.Devices)
	}

	if len(outage) == 0 {
		t.Fatal("no probe request during the outage")
	}
	for _, r := range outage {
		if r.kind != kindHTTP || r.code != http.StatusServiceUnavailable || r.retryAfter == "" || r.dur > maxDeviceWait {
			t.Errorf("during the outage: got %v in %v (Retry-After %q), want 503 with Retry-After within %v", r, r.dur.Round(time.Millisecond), r.retryAfter, maxDeviceWait)
		}
	}
	// While kube-apiserver starts it answers for itself (e.g. 403 before its RBAC cache is loaded); the
	// gateway's part is to answer every request completely and in time.
	for _, r := range starting {
		if r.dur > maxDeviceWait || (r.kind != kindOK && r.kind != kindHTTP) {
			t.Errorf("while the API server started: got %v in %v, want a complete answer within %v", r, r.dur.Round(time.Millisecond), maxDeviceWait)
		}
	}
	for _, r := range recovery {
		if r.dur > maxDeviceWait || (r.kind != kindOK && r.kind != kindHTTP) || (r.kind == kindHTTP && r.code < 500) {
			t.Errorf("once the API server was ready: got %v in %v, want a complete answer (2xx, or 5xx) within %v", r, r.dur.Round(time.Millisecond), maxDeviceWait)
		}
	}
	for _, r := range rs {
		if r.kind == kindTruncated || r.kind == kindCorrupt || r.kind == kindTimeout {
			t.Errorf("got %v at %s, want no truncated, corrupt or unanswered-in-time response", r, r.at.Format("15:04:05.000"))
		}
	}
	if len(after) == 0 || tally(after)[kindOK] != len(after) {
		t.Errorf("after re-convergence: got %s, want every probe request answered 2xx", formatTally(tally(after)))
	}
	switch last := w.lastEventType(); {
	case !watchEnded:
		t.Errorf("the open watch was still silent %v after the API server died, want it ended", maxDeviceWait)
	case w.err != nil || last != "ERROR":
		t.Errorf("the open watch ended with %s, last event %q; want a clean end of stream after an ERROR event", endKind(w.err), last)
	default:
		t.Logf("open watch ended %v after the kill began: ERROR event, then a clean end of stream", w.ended.Sub(killing).Round(time.Millisecond))
	}
	if notReadyErr != nil {
		t.Errorf("/readyz: %v 10s after the API server died, want 503", notReadyErr)
	}
	if readyErr != nil || readyAgain > maxReadyAgain {
		t.Errorf("/readyz ready again after %v (%v), want within %v of the API server", readyAgain, readyErr, maxReadyAgain)
	}
	if convErr != nil {
		t.Errorf("fleet did not re-converge: %v", convErr)
	}
}

func endKind(err error) string {
	if err == nil {
		return "clean end of stream"
	}
	return "stream cut: " + err.Error()
}

func fixedAddr(addr string) func() string { return func() string { return addr } }

// waitAuthenticated waits until the gateway knows the device with token (its registry has the record).
func waitAuthenticated(t testing.TB, gw *gatewaytest.Gateway, token string) {
	t.Helper()
	if _, err := waitFor(10*time.Second, 50*time.Millisecond, func() error {
		if r := strictDo(gw.Addr, request{method: "GET", path: "/version", auth: token}, 5*time.Second); r.code != http.StatusOK {
			return errors.New(r.String())
		}
		return nil
	}); err != nil {
		t.Fatalf("device not accepted by the gateway within 10s: %v", err)
	}
}
