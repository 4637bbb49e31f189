package reliability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/gatewaytest"
)

// logLine is one line of the gateway's JSON log.
type logLine struct {
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Msg     string    `json:"msg"`
	Err     string    `json:"err"`
	RetryIn string    `json:"retry_in"`
}

func logLines(gw *gatewaytest.Gateway, match func(logLine) bool) []logLine {
	var out []logLine
	for line := range strings.SplitSeq(gw.Log(), "\n") {
		var l logLine
		if json.Unmarshal([]byte(line), &l) == nil && match(l) {
			out = append(out, l)
		}
	}
	return out
}

// TestRegistryOutageAtStart starts the gateway while kube-apiserver is down. It must say clearly why it
// cannot load the device registry and retry with a growing delay, report not-ready and answer devices
// 503 with Retry-After meanwhile, and become ready on its own within 5 s of the API server appearing.
func TestRegistryOutageAtStart(t *testing.T) {
	c := cluster(t)
	dev := addDevice(t, "regstart-1")
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = c.StartAPIServer(context.Background())
		}
	})
	gw := gatewaytest.New(t, gatewaytest.Options{Kubeconfig: c.AdminKubeconfig(), NoWaitReady: true})
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	var answers []result
	for time.Since(started) < 8*time.Second {
		if code, body := readyz(gw); code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz during the outage: got %d %q, want 503", code, body)
		}
		answers = append(answers, strictDo(gw.Addr, request{op: "get-version", method: "GET", path: "/version", auth: dev.Token}, 10*time.Second))
		time.Sleep(500 * time.Millisecond)
	}
	if err := c.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	restarted = true
	readyAfter, err := waitFor(30*time.Second, 20*time.Millisecond, func() error {
		if gw.Ready() {
			return nil
		}
		return errors.New("not ready")
	})
	after := strictDo(gw.Addr, request{op: "get-version", method: "GET", path: "/version", auth: dev.Token}, 10*time.Second)

	retries := logLines(gw, func(l logLine) bool { return strings.Contains(l.Msg, "registry") && l.Level == "WARN" && l.Err != "" })
	var delays []string
	for _, l := range retries {
		delays = append(delays, l.RetryIn)
	}
	t.Logf("during the 8s outage: %d registry log lines, retry delays %s; device answers %s; ready %v after the API server",
		len(retries), strings.Join(delays, " "), formatTally(tally(answers)), readyAfter.Round(10*time.Millisecond))
	if len(retries) > 0 {
		t.Logf("first registry log line: %s: %s", retries[0].Msg, retries[0].Err)
	}
	if len(retries) < 3 || !strings.Contains(retries[0].Err, "connection refused") || retries[0].Time.Sub(started) > 2*time.Second {
		t.Errorf("got %d registry log lines (first %+v), want a clear one naming the error at once, then retries", len(retries), first(retries))
	}
	for i := 1; i < len(retries); i++ {
		a, _ := time.ParseDuration(retries[i-1].RetryIn)
		b, _ := time.ParseDuration(retries[i].RetryIn)
		if b < a || a == 0 {
			t.Errorf("retry delays %v, want them growing (backoff)", delays)
			break
		}
	}
	for _, r := range answers {
		if r.code != http.StatusServiceUnavailable || r.retryAfter == "" {
			t.Errorf("a device during the outage: got %v (Retry-After %q), want 503 with Retry-After", r, r.retryAfter)
		}
	}
	if err != nil || readyAfter > maxReadyAgain {
		t.Errorf("ready %v after the API server (%v), want within %v", readyAfter, err, maxReadyAgain)
	}
	if after.code != http.StatusOK {
		t.Errorf("the device once ready: got %v, want 200", after)
	}
}

func first(ls []logLine) logLine {
	if len(ls) == 0 {
		return logLine{}
	}
	return ls[0]
}

// TestRegistryWatchFailureKeepsServing runs the gateway as its own identity (deploy/rbac.yaml), then
// takes away its right to list and watch the device Secrets while impersonation stays, and ends the
// registry's watch (an API server restart): the registry watch now fails while the upstream works. The
// last synced registry must keep serving its devices, /readyz must stay 200 and say degraded, and when
// the right comes back the registry recovers on its own.
func TestRegistryWatchFailureKeepsServing(t *testing.T) {
	const user = "picogate-reg"
	c := cluster(t)
	kubeconfig, _ := gatewayIdentity(t, "gw-registry", user)
	gw := startGateway(t, kubeconfig)
	known := addDevice(t, "reg-known-1")
	waitAuthenticated(t, gw, known.Token)

	unbindRegistryRole(t, user)
	rebound := false
	t.Cleanup(func() {
		if !rebound {
			bindRegistryRole(t, user)
		}
	})
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	if err := c.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	degradedAfter, err := waitFor(30*time.Second, 50*time.Millisecond, func() error {
		if code, body := readyz(gw); code != http.StatusOK || !strings.Contains(body, "degraded") {
			return fmt.Errorf("/readyz %d %q", code, body)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("want /readyz 200 and degraded once the registry watch fails: %v", err)
	}
	_, body := readyz(gw)
	t.Logf("degraded %v after the API server came back: %q", degradedAfter.Round(10*time.Millisecond), strings.TrimSpace(body))

	late := addDevice(t, "reg-late-1")
	served := []result{
		strictDo(gw.Addr, request{op: "post-node", method: "POST", path: "/api/v1/nodes", auth: known.Token, ctype: "application/json", body: nodeBody(known.Name)}, 10*time.Second),
		strictDo(gw.Addr, request{op: "get-node", method: "GET", path: "/api/v1/nodes/" + known.Name, auth: known.Token}, 10*time.Second),
	}
	for _, r := range served {
		if r.kind != kindOK {
			t.Errorf("a device of the last synced registry: got %v, want it served", r)
		}
	}
	if r := strictDo(gw.Addr, request{method: "GET", path: "/version", auth: late.Token}, 10*time.Second); r.code != http.StatusUnauthorized {
		t.Errorf("a device added while the registry cannot be read: got %v, want 401 (not known yet)", r)
	}
	if code, body := readyz(gw); code != http.StatusOK || !strings.Contains(body, "[~]registry") {
		t.Errorf("/readyz while degraded: got %d %q, want 200 naming the registry", code, body)
	}

	bindRegistryRole(t, user)
	rebound = true
	recovered, err := waitFor(90*time.Second, 100*time.Millisecond, func() error {
		if code, body := readyz(gw); code != http.StatusOK || strings.Contains(body, "degraded") {
			return fmt.Errorf("/readyz %d %q", code, body)
		}
		if r := strictDo(gw.Addr, request{method: "GET", path: "/version", auth: late.Token}, 10*time.Second); r.code != http.StatusOK {
			return errors.New("late device: " + r.String())
		}
		return nil
	})
	t.Logf("registry recovered %v after its RBAC came back (%v after the API server)", recovered.Round(100*time.Millisecond), time.Since(back).Round(100*time.Millisecond))
	if err != nil {
		t.Errorf("registry did not recover: %v", err)
	}
}
