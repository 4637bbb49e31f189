package reliability

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/gatewaytest"
	"github.com/picogate/picogate/internal/sim"
)

// TestGatewayRestartUnderLoad stops the gateway with SIGTERM while a fleet and strict probes (allowed
// 20 requests/s each, so requests are always in flight) run through it, and starts it again on the same
// port. No non-watch response may be truncated: a request is either answered completely or not at all
// (connection refused or closed before a byte, which a device retries). Open watches end with a clean
// end of stream, the gateway exits 0, and every device reconnects.
func TestGatewayRestartUnderLoad(t *testing.T) {
	gw := startGateway(t, "", "--device-rate", "20", "--device-burst", "40")
	creds := addDevices(t, "restart-", 100)
	probes := addDevices(t, "restart-probe-", 8)
	waitAuthenticated(t, gw, probes[len(probes)-1].Token)

	start := time.Now()
	fl := startFleet(t, sim.Config{Gateway: gw.URL(), Credentials: creds, Jitter: true, StartSpread: 5 * time.Second})
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for _, p := range probes {
		wg.Go(func() {
			probe{addr: fixedAddr(gw.Addr), name: p.Name, token: p.Token, interval: 50 * time.Millisecond, rec: rec}.run(ctx)
		})
	}
	if took, err := waitFor(90*time.Second, 500*time.Millisecond, func() error { return fl.converged(ctx, t, start) }); err != nil {
		t.Fatalf("fleet not converged before the restart: %v", err)
	} else {
		t.Logf("%d devices converged %v after start", len(creds), took.Round(100*time.Millisecond))
	}
	w, err := openWatch(gw.Addr, probes[0].Token, probes[0].Name)
	if err != nil || w.code != http.StatusOK {
		t.Fatalf("opening a watch: %v", err)
	}

	stopping := time.Now()
	gw.Stop()
	exitErr := gw.Wait(time.Second)
	stopped := time.Now()
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	reconverged, convErr := waitFor(120*time.Second, 500*time.Millisecond, func() error { return fl.converged(ctx, t, restarted) })
	time.Sleep(2 * time.Second)
	cancel()
	wg.Wait()
	rep := fl.stop()

	rs := rec.snapshot()
	around := between(rs, stopping.Add(-time.Second), restarted.Add(time.Second))
	t.Logf("SIGTERM to exit %v, down (exit to ready again) %v; fleet re-converged %v after the restart",
		stopped.Sub(stopping).Round(time.Millisecond), restarted.Sub(stopped).Round(time.Millisecond), reconverged.Round(100*time.Millisecond))
	t.Logf("probe requests: %d (%s); from 1s before SIGTERM to 1s after the restart: %d (%s)", len(rs), formatTally(tally(rs)), len(around), formatTally(tally(around)))
	if rep != nil {
		t.Logf("fleet: %d requests, errors %v (the restart's), %d/%d ready at the end", rep.Requests, rep.Errors, rep.DevicesReady, rep.Devices)
	}
	if exitErr != nil {
		t.Errorf("gateway exit after SIGTERM: got %v, want exit 0", exitErr)
	}
	for _, r := range rs {
		if r.kind == kindTruncated || r.kind == kindCorrupt || r.kind == kindTimeout {
			t.Errorf("got %v at %s, want complete answers or none", r, r.at.Format("15:04:05.000"))
		}
		// The new process answers 503 with Retry-After until its registry is loaded (milliseconds).
		if r.kind == kindHTTP && r.code >= 500 && (r.at.Before(stopped) || r.code != http.StatusServiceUnavailable || r.retryAfter == "") {
			t.Errorf("got %v at %s, want no 5xx from the draining gateway, and only 503 with Retry-After from the starting one", r, r.at.Format("15:04:05.000"))
		}
	}
	if !w.waitEnd(time.Millisecond) {
		t.Error("the open watch did not end when the gateway stopped")
	} else if w.err != nil {
		t.Errorf("the open watch: got %s, want a clean end of stream", endKind(w.err))
	}
	if convErr != nil {
		t.Errorf("devices did not reconnect: %v", convErr)
	}
	if n := tally(between(rs, restarted.Add(reconverged), time.Now()))[kindOK]; n == 0 {
		t.Error("no successful probe request after the restart")
	}
}

// TestTwoGatewaysEnforceRevocation runs two gateway processes against one API server, with devices
// using both, and revokes a device: each gateway refuses it within 2 s of `device revoke` returning.
func TestTwoGatewaysEnforceRevocation(t *testing.T) {
	const bound = 2 * time.Second
	gws := []*gatewaytest.Gateway{startGateway(t, ""), startGateway(t, "")}
	victim := addDevice(t, "revoke-both-1")
	creds := addDevices(t, "two-gw-", 20)
	for _, gw := range gws {
		waitAuthenticated(t, gw, victim.Token)
	}
	startFleet(t, sim.Config{Gateway: gws[0].URL(), Credentials: creds[:10], StartSpread: 2 * time.Second, Jitter: true})
	startFleet(t, sim.Config{Gateway: gws[1].URL(), Credentials: creds[10:], StartSpread: 2 * time.Second, Jitter: true})
	time.Sleep(3 * time.Second)

	picogateCLI(t, "device", "revoke", victim.Name)
	took := make([]time.Duration, len(gws))
	errs := make([]error, len(gws))
	var wg sync.WaitGroup
	for i, gw := range gws {
		wg.Go(func() {
			took[i], errs[i] = waitFor(5*time.Second, 10*time.Millisecond, func() error {
				r := strictDo(gw.Addr, request{method: "GET", path: "/version", auth: victim.Token}, 5*time.Second)
				if r.code == http.StatusUnauthorized {
					return nil
				}
				return errors.New(r.String())
			})
		})
	}
	wg.Wait()
	for i := range gws {
		t.Logf("gateway %d refused the revoked device %v after `device revoke` returned", i+1, took[i].Round(time.Millisecond))
		if errs[i] != nil || took[i] > bound {
			t.Errorf("gateway %d: revocation took %v (%v), want within %v", i+1, took[i], errs[i], bound)
		}
	}
	// The other devices are unaffected on both.
	for i, gw := range gws {
		r := strictDo(gw.Addr, request{method: "GET", path: "/version", auth: creds[i*10].Token}, 5*time.Second)
		if r.code != http.StatusOK {
			t.Errorf("gateway %d, another device: got %v, want 200", i+1, fmt.Sprint(r))
		}
	}
}
