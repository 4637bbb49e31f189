package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/picogate/picogate/internal/controlplane"
	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
	"github.com/picogate/picogate/internal/gatewaytest"
	"github.com/picogate/picogate/internal/sim"
)

// TestMeasureHeartbeatLoad is a measurement, not a check: with PICOGATE_MEASURE_BOARDS=N (e.g. 200) it
// runs N picosim boards in firmware mode for PICOGATE_MEASURE_DURATION (default 2m) through a gateway with
// heartbeat translation and cached reads off, then N others through one with both on (the defaults),
// against a control plane whose kube-controller-manager has k3s's 50 s grace period, and prints what
// reached the API server per device-minute after the boot ramp, from its audit log. Without the variable
// it does nothing.
func TestMeasureHeartbeatLoad(t *testing.T) {
	boards := os.Getenv("PICOGATE_MEASURE_BOARDS")
	if boards == "" {
		t.Skip("set PICOGATE_MEASURE_BOARDS=200 to measure")
	}
	duration := 2 * time.Minute
	if v := os.Getenv("PICOGATE_MEASURE_DURATION"); v != "" {
		var err error
		if duration, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	policy, audit := filepath.Join(dir, "audit-policy.yaml"), filepath.Join(dir, "audit.log")
	if err := os.WriteFile(policy, []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n- level: Metadata\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := controlplanetest.Start(t, controlplane.Config{ControllerManager: true, NodeMonitorGracePeriod: 50 * time.Second,
		APIServerArgs: []string{"--audit-policy-file=" + policy, "--audit-log-path=" + audit, "--audit-log-mode=batch"}})
	c := &hbCluster{cp: cp, audit: audit}
	if err := controlplanetest.SeedFleet(context.Background(), kubernetes.NewForConfigOrDie(cp.AdminConfig())); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []struct {
		prefix string
		args   []string
	}{
		{"m-off-", []string{"--heartbeat-translation=false", "--read-cache=false"}},
		{"m-on-", nil},
	} {
		creds, err := sim.ParseCredentials([]byte(c.cli(t, "device", "add", "--count", boards, "--prefix", mode.prefix, "-o", "json")))
		if err != nil {
			t.Fatal(err)
		}
		gw := gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: cp.AdminKubeconfig(), Args: append([]string{"--device-rate", "50", "--access-log=false"}, mode.args...)})
		s, err := sim.New(sim.Config{Gateway: gw.URL(), Credentials: creds, Mode: sim.ModeFirmware, Duration: duration, Jitter: true})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		rep, err := s.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		end := time.Now()
		from := start.Add(30 * time.Second) // after the boot ramp (10 s) and the first writes
		time.Sleep(2 * time.Second)         // the batched audit backend flushes
		counts := countWindow(t, audit, mode.prefix, from, end)
		devMin := float64(len(creds)) * end.Sub(from).Minutes()
		var parts []string
		for _, k := range []string{"all", "status writes", "lease writes", "configmap gets", "node creates"} {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, float64(counts[k])/devMin))
		}
		t.Logf("%s: raw counts %v", mode.prefix, counts)
		t.Logf("%s (%s): %d boards, %d ready at the end, errors %v, gateway %s; per device-minute over the last %v: %s", mode.prefix, strings.Join(mode.args, " "),
			rep.Devices, rep.DevicesReady, rep.Errors, rss(gw.PID()), end.Sub(from).Round(time.Second), strings.Join(parts, ", "))
		gw.Stop()
	}
}

// countWindow counts the audited requests of the devices named prefix* received within [from, to).
func countWindow(t *testing.T, audit, prefix string, from, to time.Time) map[string]int {
	t.Helper()
	type event struct {
		hbAuditEvent
		Received time.Time `json:"requestReceivedTimestamp"`
	}
	in := func(e *event) bool {
		return e.ImpersonatedUser != nil && e.ObjectRef != nil && strings.HasPrefix(e.ImpersonatedUser.Username, "system:node:"+prefix) &&
			!e.Received.Before(from) && e.Received.Before(to)
	}
	out := map[string]int{}
	for _, e := range controlplanetest.ReadAudit(t, audit, in) {
		out["all"]++
		switch {
		case statusWrites(e.hbAuditEvent):
			out["status writes"]++
		case leaseWrites(e.hbAuditEvent):
			out["lease writes"]++
			if e.ResponseStatus != nil {
				out[fmt.Sprintf("lease %s %d", e.Verb, e.ResponseStatus.Code)]++
			}
		case e.Verb == "get" && e.ObjectRef.Resource == "configmaps":
			out["configmap gets"]++
		case e.Verb == "create" && e.ObjectRef.Resource == "nodes":
			out["node creates"]++
		}
	}
	return out
}

// rss is a process's resident memory, as /proc says it.
func rss(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "RSS unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return "RSS " + strings.Join(strings.Fields(v), " ")
		}
	}
	return "RSS unknown"
}
