package e2e

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/gatewaytest"
)

// TestReplicasShareRegistry runs two gateways, as the Deployment's two replicas do, with the credential
// `picogate setup` wrote: a device registered once works through both (it may boot through one and
// heartbeat through the other), and a revocation is enforced by each within 2 s.
func TestReplicasShareRegistry(t *testing.T) {
	kc, _ := runSetup(t)
	gws := []*gatewaytest.Gateway{startGatewayWith(t, kc), startGatewayWith(t, kc)}
	cred := addDevice(t, "replica-dev-1")
	for _, gw := range gws {
		waitAuthenticated(t, gw, cred.Token)
	}
	if r := firmwareDo(t, gws[0].Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, "replica-dev-1", "127.0.0.1"), cred.Header); r.code != 201 {
		t.Fatalf("POST node through replica 0: got %d %s, want 201", r.code, r.body)
	}
	if r := firmwareDo(t, gws[1].Addr, "", "PATCH", "/api/v1/nodes/replica-dev-1/status", "application/strategic-merge-patch+json", firmwareHeartbeat("127.0.0.1"), cred.Header); r.code != 200 {
		t.Fatalf("PATCH status through replica 1: got %d %s, want 200", r.code, r.body)
	}
	for i, gw := range gws {
		if r := firmwareDo(t, gw.Addr, "", "GET", "/api/v1/nodes/replica-dev-1", "", "", cred.Header); r.code != 200 {
			t.Errorf("GET node through replica %d: got %d, want 200", i, r.code)
		}
	}

	picogate(t, "device", "revoke", "replica-dev-1")
	revoked := time.Now()
	took := make([]time.Duration, len(gws))
	for pending := len(gws); pending > 0; {
		if time.Since(revoked) > 5*time.Second {
			t.Fatalf("5s after revoke, replicas still accepting the device: took %v (0 = not yet)", took)
		}
		for i, gw := range gws {
			if took[i] != 0 {
				continue
			}
			if r := firmwareDo(t, gw.Addr, "", "GET", "/api/v1/nodes/replica-dev-1", "", "", cred.Header); r.code == 401 {
				took[i] = time.Since(revoked)
				pending--
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, d := range took {
		t.Logf("replica %d refused the revoked device %v after revoke", i, d.Round(time.Millisecond))
		if d > 2*time.Second {
			t.Errorf("replica %d: revocation took %v, want at most 2s", i, d)
		}
	}
	for i, gw := range gws {
		t.Logf("replica %d peak RSS %s (the Deployment requests 64Mi, limits 256Mi)", i, peakRSS(gw.PID()))
	}
	// Neither replica kept anything of its own: a third one started now knows the device is revoked.
	third := startGatewayWith(t, kc)
	if r := firmwareDo(t, third.Addr, "", "GET", "/version", "", "", cred.Header); r.code != 401 {
		t.Errorf("a replica started after the revoke: got %d, want 401", r.code)
	}
}

// peakRSS is a process's VmHWM from /proc, for the log (the resource requests were sized from it).
func peakRSS(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
