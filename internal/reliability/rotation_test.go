package reliability

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/sim"
)

// TestUpstreamCredentialRotation replaces the files of the gateway's client certificate (named by its
// kubeconfig) with another valid identity while a fleet and strict probes run through it. Not one
// request may fail, an open watch must survive, and the new identity must be in use: the API server's
// audit log shows the gateway's own SelfSubjectReviews and the forwarded device requests made as the
// new user, none as the old one once the switch is done, and traffic keeps flowing after the old
// identity's RBAC is deleted.
func TestUpstreamCredentialRotation(t *testing.T) {
	const (
		oldUser, newUser = "picogate-rot-a", "picogate-rot-b"
		reload           = time.Second
	)
	c := cluster(t)
	kubeconfig, certName := gatewayIdentity(t, "gw-rotation", oldUser)
	bindGatewayRoles(t, newUser)
	gw := startGateway(t, kubeconfig, "--cert-reload-interval", reload.String())
	creds := addDevices(t, "rot-", 30)
	probes := addDevices(t, "rot-probe-", 4)
	waitAuthenticated(t, gw, probes[len(probes)-1].Token)

	start := time.Now()
	fl := startFleet(t, sim.Config{Gateway: gw.URL(), Credentials: creds, Jitter: true, StartSpread: 3 * time.Second})
	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for _, p := range probes {
		wg.Go(func() {
			probe{addr: fixedAddr(gw.Addr), name: p.Name, token: p.Token, interval: probeInterval, rec: rec}.run(ctx)
		})
	}
	if _, err := waitFor(60*time.Second, 500*time.Millisecond, func() error { return fl.converged(ctx, t, start) }); err != nil {
		t.Fatalf("fleet not converged before the rotation: %v", err)
	}
	w, err := openWatch(gw.Addr, probes[0].Token, probes[0].Name)
	if err != nil || w.code != http.StatusOK {
		t.Fatalf("opening a watch: %v", err)
	}
	time.Sleep(2 * time.Second)

	rotated := time.Now()
	if _, _, err := c.IssueClientCert(certName, newUser); err != nil {
		t.Fatal(err)
	}
	var ownAt, fwdAt time.Time
	took, err := waitFor(10*time.Second+5*reload, 100*time.Millisecond, func() error {
		for _, ev := range readAudit(t) {
			if ev.User.Username != newUser || ev.Received.Before(rotated) {
				continue
			}
			if ev.selfReview() && ownAt.IsZero() {
				ownAt = ev.Received
			}
			if ev.forwarded() && fwdAt.IsZero() {
				fwdAt = ev.Received
			}
		}
		if ownAt.IsZero() || fwdAt.IsZero() {
			return fmt.Errorf("no %s request yet (own client seen: %v, forwarded seen: %v)", newUser, !ownAt.IsZero(), !fwdAt.IsZero())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("new identity not in use %v after the rotation: %v", took, err)
	}
	switched := later(ownAt, fwdAt)
	time.Sleep(3 * time.Second)
	unbindGatewayRoles(t, oldUser)
	unbound := time.Now()
	time.Sleep(3 * time.Second)
	cancel()
	wg.Wait()
	rep := fl.stop()

	rs := rec.snapshot()
	t.Logf("rotation: own client's first SelfSubjectReview as %s %v after the files changed, first forwarded request %v after",
		newUser, ownAt.Sub(rotated).Round(time.Millisecond), fwdAt.Sub(rotated).Round(time.Millisecond))
	// A transport reads the files when a request passes through it, and switches from the next one: how
	// soon the forwarded requests switch depends on when the gateway next forwards anything at all.
	var firstFwd time.Time
	for _, ev := range readAudit(t) {
		if ev.forwarded() && !ev.Received.Before(rotated) && (firstFwd.IsZero() || ev.Received.Before(firstFwd)) {
			firstFwd = ev.Received
		}
	}
	t.Logf("the first request forwarded after the files changed, as either identity: %v after", firstFwd.Sub(rotated).Round(time.Millisecond))
	t.Logf("probe requests: %d (%s); %d after the old identity's RBAC was deleted", len(rs), formatTally(tally(rs)), len(between(rs, unbound, time.Now())))
	if rep != nil {
		t.Logf("fleet: %d requests, errors %v", rep.Requests, rep.Errors)
		if len(rep.Errors) != 0 {
			t.Errorf("fleet errors: got %v, want none", rep.Errors)
		}
	}
	for _, r := range rs {
		if r.kind != kindOK {
			t.Errorf("got %v at %s, want every request to succeed", r, r.at.Format("15:04:05.000"))
		}
	}
	if n := len(logLines(gw, func(l logLine) bool { return strings.Contains(l.Msg, "client certificate changed") })); n != 1 {
		t.Errorf("gateway log: got %d lines saying the client certificate changed, want 1", n)
	}
	if len(between(rs, unbound, time.Now())) == 0 {
		t.Error("no probe request after the old identity lost its RBAC")
	}
	select {
	case <-w.done:
		t.Errorf("the watch opened before the rotation ended (%s), want it to carry on", endKind(w.err))
	default:
	}
	// Once the switch is done (plus a reload interval for requests already on their way), nothing new
	// goes out as the old identity. Watches opened before the rotation finish on the old connections.
	var old, fwdNew, ownNew int
	for _, ev := range readAudit(t) {
		if ev.Received.Before(switched.Add(reload)) {
			continue
		}
		switch {
		case ev.User.Username == oldUser && ev.Verb != "watch":
			old++
			if old <= 5 {
				t.Errorf("after the switch: %s %s as %s at %s, want the new identity", ev.Verb, ev.RequestURI, oldUser, ev.Received.Format("15:04:05.000"))
			}
		case ev.User.Username == newUser && ev.forwarded():
			fwdNew++
		case ev.User.Username == newUser && ev.selfReview():
			ownNew++
		}
	}
	t.Logf("after the switch: %d forwarded requests and %d SelfSubjectReviews as %s, %d non-watch requests as %s", fwdNew, ownNew, newUser, old, oldUser)
	if fwdNew == 0 || ownNew == 0 {
		t.Errorf("after the switch: got %d forwarded and %d own requests as %s, want both", fwdNew, ownNew, newUser)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
