package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/picogate/picogate/internal/controlplane"
	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
	"github.com/picogate/picogate/internal/gatewaytest"
)

// hbGrace is kube-controller-manager's --node-monitor-grace-period in these tests: 20 s instead of
// Kubernetes' 50 s, so a node goes Unknown within a test's patience. The gateway is told the same, so it
// renews Leases every 5 s (grace/4): on every heartbeat of the firmware's 10 s period.
const hbGrace = 20 * time.Second

// hbCluster is a control plane of its own for the heartbeat tests: unlike the package's shared one it runs
// kube-controller-manager (the node lifecycle controller is what marks a silent node Unknown), and audits
// every request so writes can be counted.
type hbCluster struct {
	cp    *controlplane.ControlPlane
	cs    kubernetes.Interface
	audit string
}

func startHBCluster(t *testing.T) *hbCluster {
	t.Helper()
	dir := t.TempDir()
	policy, audit := filepath.Join(dir, "audit-policy.yaml"), filepath.Join(dir, "audit.log")
	if err := os.WriteFile(policy, []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n- level: Metadata\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := controlplanetest.Start(t, controlplane.Config{
		ControllerManager: true, NodeMonitorGracePeriod: hbGrace,
		APIServerArgs: []string{"--audit-policy-file=" + policy, "--audit-log-path=" + audit, "--audit-log-mode=blocking"},
	})
	cs := kubernetes.NewForConfigOrDie(cp.AdminConfig())
	if err := controlplanetest.SeedFleet(context.Background(), cs); err != nil {
		t.Fatal(err)
	}
	return &hbCluster{cp: cp, cs: cs, audit: audit}
}

func (c *hbCluster) gateway(t *testing.T, args ...string) *gatewaytest.Gateway {
	t.Helper()
	return gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: c.cp.AdminKubeconfig(),
		Args: append([]string{"--node-monitor-grace-period", hbGrace.String()}, args...)})
}

func (c *hbCluster) cli(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(gatewaytest.Binary(t, "picogate"), append(args, "--kubeconfig", c.cp.AdminKubeconfig())...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("picogate %s: %v: %s", strings.Join(args, " "), err, e.String())
	}
	return o.String()
}

// addDevice registers a token device, waits until gw accepts it (the registry is watched, so a request
// sent at once could meet a 401), and returns the one header the firmware adds for it.
func (c *hbCluster) addDevice(t *testing.T, gw *gatewaytest.Gateway, name string) string {
	t.Helper()
	var cred credential
	if err := json.Unmarshal([]byte(c.cli(t, "device", "add", name, "-o", "json")), &cred); err != nil {
		t.Fatal(err)
	}
	waitAuthenticated(t, gw, cred.Token)
	return "Authorization: Bearer " + cred.Token
}

// hbAuditEvent is the part of an audit event the heartbeat tests count.
type hbAuditEvent struct {
	Verb      string `json:"verb"`
	UserAgent string `json:"userAgent"`
	ObjectRef *struct {
		Resource, Namespace, Name, Subresource string
	} `json:"objectRef"`
	ImpersonatedUser *struct {
		Username string `json:"username"`
	} `json:"impersonatedUser"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// countAudit counts the audited requests made as system:node:NAME that match.
func (c *hbCluster) countAudit(t *testing.T, name string, match func(e hbAuditEvent) bool) int {
	t.Helper()
	return len(controlplanetest.ReadAudit(t, c.audit, func(e *hbAuditEvent) bool {
		return e.ImpersonatedUser != nil && e.ImpersonatedUser.Username == "system:node:"+name && e.ObjectRef != nil && match(*e)
	}))
}

func statusWrites(e hbAuditEvent) bool {
	return (e.Verb == "patch" || e.Verb == "update") && e.ObjectRef.Resource == "nodes" && e.ObjectRef.Subresource == "status"
}

func leaseWrites(e hbAuditEvent) bool {
	return (e.Verb == "patch" || e.Verb == "update" || e.Verb == "create") && e.ObjectRef.Resource == "leases"
}

// settleAudit waits until a request made after everything else has reached the audit log: a forwarded
// read no cache serves (a query), so the events of the requests before it are written too.
func (c *hbCluster) settleAudit(t *testing.T, gw *gatewaytest.Gateway, name, auth string) {
	t.Helper()
	marker := fmt.Sprintf("settle-%d", time.Now().UnixNano())
	r := rawRequest(t, gw.Addr, "", "GET", "/api/v1/nodes/"+name+"?resourceVersion=0", marker, []string{auth}, "")
	if r.code != 200 {
		t.Fatalf("settling the audit log: got %d %s", r.code, r.body)
	}
	if !gatewaytest.WaitFor(context.Background(), 10*time.Second, func() bool {
		return c.countAudit(t, name, func(e hbAuditEvent) bool { return e.UserAgent == marker }) > 0
	}) {
		t.Fatal("the settling request never reached the audit log")
	}
}

// heartbeatWith is the firmware's status PATCH with MemoryPressure set to memory.
func heartbeatWith(ip, memory string) string {
	return strings.Replace(firmwareHeartbeat(ip), `"type":"MemoryPressure","status":"False"`, `"type":"MemoryPressure","status":"`+memory+`"`, 1)
}

func (c *hbCluster) node(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n, err := c.cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("getting node %s: %v", name, err)
	}
	return n
}

func condition(n *corev1.Node, typ corev1.NodeConditionType) corev1.NodeCondition {
	for _, c := range n.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return corev1.NodeCondition{}
}

// TestHeartbeatTranslation runs the reference firmware's requests, byte for byte, through a gateway with
// heartbeat translation and cached reads on (the defaults) against a control plane whose
// kube-controller-manager marks silent nodes Unknown.
func TestHeartbeatTranslation(t *testing.T) {
	c := startHBCluster(t)
	gw := c.gateway(t, "--read-cache-max-staleness", "2s", "--read-cache-authz-window", "5s")

	t.Run("heartbeat-only PATCHes write no Node", func(t *testing.T) {
		const name = "hb-quiet"
		auth := c.addDevice(t, gw, name)
		if r := firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, name, "127.0.0.1"), auth); r.code != 201 {
			t.Fatalf("POST node: got %d %s", r.code, r.body)
		}
		outcomes := map[string]int{}
		for range 8 {
			r := firmwareDo(t, gw.Addr, "", "PATCH", "/api/v1/nodes/"+name+"/status", "application/strategic-merge-patch+json", firmwareHeartbeat("127.0.0.1"), auth)
			if r.code != 200 || len(r.raw) > 2047 {
				t.Fatalf("heartbeat: got %d in %d bytes (%s), want 200 within 2047", r.code, len(r.raw), r.body)
			}
			checkFirmwareFits(t, "heartbeat", r)
			outcomes[r.headers["picogate-heartbeat"]]++
		}
		c.settleAudit(t, gw, name, auth)
		writes, leases := c.countAudit(t, name, statusWrites), c.countAudit(t, name, leaseWrites)
		t.Logf("8 heartbeats: %v; status writes upstream %d, Lease writes %d", outcomes, writes, leases)
		if writes != 1 {
			t.Errorf("status writes upstream for 8 heartbeat-only PATCHes: got %d, want 1 (the first, on first sight)", writes)
		}
		if leases < 1 {
			t.Errorf("Lease writes: got %d, want at least the creation", leases)
		}
		lease, err := c.cs.CoordinationV1().Leases("kube-node-lease").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the device's Lease: %v", err)
		}
		n := c.node(t, name)
		if len(lease.OwnerReferences) != 1 || lease.OwnerReferences[0].UID != n.UID || lease.OwnerReferences[0].Kind != "Node" {
			t.Errorf("Lease owner: got %+v, want the Node %s (uid %s)", lease.OwnerReferences, name, n.UID)
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != name || lease.Spec.RenewTime == nil {
			t.Errorf("Lease spec: got %+v, want holder %s and a renew time", lease.Spec, name)
		}
	})

	t.Run("a status change reaches the Node within one heartbeat", func(t *testing.T) {
		const name = "hb-change"
		auth := c.addDevice(t, gw, name)
		if r := firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, name, "127.0.0.1"), auth); r.code != 201 {
			t.Fatalf("POST node: got %d %s, want 201", r.code, r.body)
		}
		for range 2 {
			firmwareDo(t, gw.Addr, "", "PATCH", "/api/v1/nodes/"+name+"/status", "application/strategic-merge-patch+json", firmwareHeartbeat("127.0.0.1"), auth)
		}
		before := time.Now().Add(-time.Second).Truncate(time.Second)
		r := firmwareDo(t, gw.Addr, "", "PATCH", "/api/v1/nodes/"+name+"/status", "application/strategic-merge-patch+json", heartbeatWith("127.0.0.1", "True"), auth)
		if r.code != 200 || r.headers["picogate-heartbeat"] != "written" {
			t.Fatalf("the heartbeat with MemoryPressure=True: got %d %q, want 200 written", r.code, r.headers["picogate-heartbeat"])
		}
		// The device has its answer: the Node already says so.
		mp := condition(c.node(t, name), corev1.NodeMemoryPressure)
		if mp.Status != corev1.ConditionTrue || mp.LastTransitionTime.Time.Before(before) {
			t.Errorf("MemoryPressure when the device was answered: got %s since %v, want True since this heartbeat", mp.Status, mp.LastTransitionTime)
		}
		if ready := condition(c.node(t, name), corev1.NodeReady); ready.LastHeartbeatTime.Time.Before(before) {
			t.Errorf("Ready lastHeartbeatTime: got %v, want the gateway's clock at this heartbeat", ready.LastHeartbeatTime)
		}
	})

	t.Run("a node Unknown after silence is Ready again at its next heartbeat", func(t *testing.T) {
		const name = "hb-silent"
		auth := c.addDevice(t, gw, name)
		if r := firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, name, "127.0.0.1"), auth); r.code != 201 {
			t.Fatalf("POST node: got %d %s, want 201", r.code, r.body)
		}
		firmwareDo(t, gw.Addr, "", "PATCH", "/api/v1/nodes/"+name+"/status", "application/strategic-merge-patch+json", firmwareHeartbeat("127.0.0.1"), auth)
		// The board goes silent: the controller marks the node Unknown after the grace period.
		waitCondition(t, c, name, corev1.ConditionUnknown, 2*hbGrace+10*time.Second)
		r := firmwareDo(t, gw.Addr, "", "PATCH", "/api/v1/nodes/"+name+"/status", "application/strategic-merge-patch+json", firmwareHeartbeat("127.0.0.1"), auth)
		if r.code != 200 || r.headers["picogate-heartbeat"] != "written" {
			t.Errorf("first heartbeat after the silence: got %d %q, want 200 written", r.code, r.headers["picogate-heartbeat"])
		}
		if got := condition(c.node(t, name), corev1.NodeReady).Status; got != corev1.ConditionTrue {
			t.Errorf("Ready when the device was answered: got %s, want True", got)
		}
	})

	t.Run("cached reads", func(t *testing.T) {
		const allowed, other = "hb-reader", "hb-other"
		authA, authB := c.addDevice(t, gw, allowed), c.addDevice(t, gw, other)
		ctx := context.Background()
		// A ConfigMap only hb-reader may read.
		if _, err := c.cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "hb-private"}, Data: map[string]string{"secret_ish": "42"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.cs.RbacV1().Roles("default").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "hb-private"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"hb-private"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.cs.RbacV1().RoleBindings("default").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "hb-private"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "hb-private"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "system:node:" + allowed}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		const private = "/api/v1/namespaces/default/configmaps/hb-private"
		first := firmwareDo(t, gw.Addr, "", "GET", private, "", "", authA)
		second := firmwareDo(t, gw.Addr, "", "GET", private, "", "", authA)
		if first.code != 200 || second.code != 200 || second.headers["picogate-cache"] != "hit" || second.body != first.body {
			t.Fatalf("the allowed device reading twice: got %d %q then %d %q, want 200 then 200 from memory", first.code, first.headers["picogate-cache"], second.code, second.headers["picogate-cache"])
		}
		etag := first.headers["etag"]
		if r := firmwareDo(t, gw.Addr, "", "GET", private, "", "", authA+"\r\nIf-None-Match: "+etag); r.code != 304 || r.body != "" {
			t.Errorf("If-None-Match %s: got %d with %d body bytes, want 304 without a body", etag, r.code, len(r.body))
		}

		t.Run("a device never receives a cached object it was not allowed to read", func(t *testing.T) {
			for _, extra := range []string{"", "\r\nIf-None-Match: " + etag} {
				r := firmwareDo(t, gw.Addr, "", "GET", private, "", "", authB+extra)
				if r.code != 403 || strings.Contains(r.body, "secret_ish") {
					t.Errorf("another device (extra header %q): got %d %s, want the API server's 403", extra, r.code, r.body)
				}
			}
			// Withdrawn in RBAC: refused within the window (5 s here) plus the staleness (2 s).
			if err := c.cs.RbacV1().RoleBindings("default").Delete(ctx, "hb-private", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			deleted := time.Now()
			if !gatewaytest.WaitFor(ctx, 15*time.Second, func() bool {
				return firmwareDo(t, gw.Addr, "", "GET", private, "", "", authA).code == 403
			}) {
				t.Errorf("after the RoleBinding's removal: still served %v later, want 403 within the window", time.Since(deleted).Round(time.Second))
			}
			t.Logf("permission withdrawn in RBAC: refused %v later (window 5s, staleness 2s)", time.Since(deleted).Round(100*time.Millisecond))
		})

		t.Run("a revoked device's cached reads stop at once", func(t *testing.T) {
			const fleet = "/api/v1/namespaces/default/configmaps/pico-config"
			firmwareDo(t, gw.Addr, "", "GET", fleet, "", "", authB)
			if r := firmwareDo(t, gw.Addr, "", "GET", fleet, "", "", authB); r.code != 200 || r.headers["picogate-cache"] != "hit" {
				t.Fatalf("before revocation: got %d %q, want 200 from memory", r.code, r.headers["picogate-cache"])
			}
			c.cli(t, "device", "revoke", other)
			revoked := time.Now()
			if !gatewaytest.WaitFor(ctx, 2*time.Second, func() bool {
				return firmwareDo(t, gw.Addr, "", "GET", fleet, "", "", authB).code == 401
			}) {
				t.Fatal("the revoked device is still served 2s after `device revoke`")
			}
			t.Logf("revoked device refused %v after `device revoke` returned", time.Since(revoked).Round(time.Millisecond))
		})
	})

	t.Run("an agent's own Lease renewals are coalesced", func(t *testing.T) { agentLeaseCoalesced(t, c, gw) })

	t.Run("the firmware stays Ready across an API server restart", func(t *testing.T) {
		const name = "hb-restart"
		auth := c.addDevice(t, gw, name)
		if r := firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, name, "127.0.0.1"), auth); r.code != 201 {
			t.Fatalf("POST node: got %d", r.code)
		}
		// The unmodified firmware's loop: a status PATCH every 10 s, whatever the answers.
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		defer func() { cancel(); wg.Wait() }()
		wg.Go(func() {
			for {
				firmwareTry(gw.Addr, "PATCH", "/api/v1/nodes/"+name+"/status", "application/strategic-merge-patch+json", firmwareHeartbeat("127.0.0.1"), auth)
				select {
				case <-ctx.Done():
					return
				case <-time.After(10 * time.Second):
				}
			}
		})
		waitCondition(t, c, name, corev1.ConditionTrue, 30*time.Second)

		if err := c.cp.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(hbGrace + 5*time.Second) // an outage longer than the grace period
		if err := c.cp.StartAPIServer(context.Background()); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		// Watch the Ready condition from now on: Unknown (the controller's verdict on the outage) may
		// come and must go, without the device doing anything but its usual heartbeats.
		sawUnknown, readyAt := false, time.Time{}
		deadline := back.Add(2*hbGrace + 20*time.Second)
		for time.Now().Before(deadline) {
			n, err := c.cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
			if err == nil {
				ready := condition(n, corev1.NodeReady)
				switch {
				case ready.Status == corev1.ConditionUnknown:
					sawUnknown, readyAt = true, time.Time{}
				case ready.Status == corev1.ConditionTrue && ready.LastHeartbeatTime.After(back.Add(-time.Second)) && readyAt.IsZero():
					readyAt = time.Now()
				}
				// Ready again and stable for two grace periods: done.
				if !readyAt.IsZero() && time.Since(readyAt) > 2*hbGrace {
					break
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Logf("after the API server came back: Unknown seen %v; Ready=True with a fresh heartbeat %v later", sawUnknown, readyAt.Sub(back).Round(time.Second))
		if readyAt.IsZero() {
			t.Fatalf("the node is not Ready=True with a heartbeat after the restart, %v after it", time.Since(back).Round(time.Second))
		}
		if got := condition(c.node(t, name), corev1.NodeReady).Status; got != corev1.ConditionTrue {
			t.Errorf("Ready at the end: got %s, want True", got)
		}
	})
}

// waitCondition waits until the node's Ready condition has the status.
func waitCondition(t *testing.T, c *hbCluster, name string, want corev1.ConditionStatus, timeout time.Duration) {
	t.Helper()
	var last corev1.ConditionStatus
	if !gatewaytest.WaitFor(context.Background(), timeout, func() bool {
		n, err := c.cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		last = condition(n, corev1.NodeReady).Status
		return last == want
	}) {
		t.Fatalf("node %s Ready: got %s after %v, want %s", name, last, timeout, want)
	}
}

// firmwareTry is firmwareDo for a goroutine: failures (the API server down, the gateway answering 503)
// are the firmware's to ignore.
func firmwareTry(addr, method, path, ctype, body, extra string) {
	rec := &errorsOnly{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { _ = recover() }()
		firmwareDo(rec, addr, "", method, path, ctype, body, extra)
	}()
	<-done
}

// errorsOnly is a testing.TB whose failures end only the call (firmwareDo uses Helper and Fatalf), for
// requests whose failure is expected.
type errorsOnly struct{ testing.TB }

func (errorsOnly) Helper()               {}
func (errorsOnly) Fatalf(string, ...any) { panic(errors.New("request failed")) }
