package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/picogate/picogate/device"
	"github.com/picogate/picogate/internal/gatewaytest"
)

// agentLeaseCoalesced runs the device library's agent, renewing its Lease every second, through a gateway
// that renews at most every hbGrace/4 (5 s): the API server must see about one renewal in five, the node
// must stay Ready, and the Lease's renewTime upstream must keep moving.
func agentLeaseCoalesced(t *testing.T, c *hbCluster, gw *gatewaytest.Gateway) {
	const name = "hb-agent"
	var cred credential
	if err := json.Unmarshal([]byte(c.cli(t, "device", "add", name, "-o", "json")), &cred); err != nil {
		t.Fatal(err)
	}
	waitAuthenticated(t, gw, cred.Token)
	agent, err := device.New(device.Config{Gateway: "http://" + gw.Addr, Name: name, Token: cred.Token,
		LeaseInterval: time.Second, LeaseDuration: 40 * time.Second, Jitter: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx) }()
	stop := sync.OnceValue(func() error { cancel(); return <-done })
	defer func() { _ = stop() }()

	waitCondition(t, c, name, corev1.ConditionTrue, 30*time.Second)
	lease := func() time.Time {
		l, err := c.cs.CoordinationV1().Leases("kube-node-lease").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil || l.Spec.RenewTime == nil {
			t.Fatalf("getting the Lease: %v", err)
		}
		return l.Spec.RenewTime.Time
	}
	first, begin := lease(), agent.Status().LeaseRenewals
	const renewals = 16
	if !gatewaytest.WaitFor(context.Background(), 60*time.Second, func() bool { return agent.Status().LeaseRenewals >= begin+renewals }) {
		t.Fatalf("the agent renewed %d times in 60 s, want %d", agent.Status().LeaseRenewals-begin, renewals)
	}
	_ = stop()
	st := agent.Status()
	if st.LeaseLate != 0 {
		t.Errorf("late renewals seen by the agent: got %d, want 0 (a coalesced renewal is answered at once)", st.LeaseLate)
	}
	if got := lease(); !got.After(first) {
		t.Errorf("renewTime upstream: got %v, want after %v (forwarded renewals reach the Lease)", got, first)
	}

	c.settleAudit(t, gw, name, "Authorization: Bearer "+cred.Token)
	writes := c.countAudit(t, name, leaseWrites)
	t.Logf("the agent renewed %d times (%d since Ready); the API server saw %d Lease writes", st.LeaseRenewals, st.LeaseRenewals-begin, writes)
	// At one renewal a second and at most one forwarded per 5 s (plus the create and the owner-setting
	// first patch), the API server sees under half of them; without coalescing it sees every one.
	if max := int(st.LeaseRenewals)/2 + 2; writes > max {
		t.Errorf("Lease writes upstream: got %d for %d renewals, want at most %d", writes, st.LeaseRenewals, max)
	}
	if writes < 3 {
		t.Errorf("Lease writes upstream: got %d, want the renewals a renew interval apart forwarded (at least 3)", writes)
	}
	if got := condition(c.node(t, name), corev1.NodeReady).Status; got != corev1.ConditionTrue {
		t.Errorf("Ready: got %s, want True", got)
	}
	resp, err := http.Get("http://" + gw.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(m), `picogate_lease_renewals_total{outcome="coalesced"}`) {
		t.Error(`picogate_lease_renewals_total{outcome="coalesced"} missing from the metrics`)
	}
}
