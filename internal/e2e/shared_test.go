package e2e

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/picogate/picogate/internal/controlplane"
	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
	"github.com/picogate/picogate/internal/gatewaytest"
	"github.com/picogate/picogate/internal/registry"
	"github.com/picogate/picogate/internal/setup"
)

// sharedNS is the registry namespace of the gateways sharedGateway installs: a ServiceAccount of its own,
// so the one in picogate-system never gets the right to impersonate the shared identity.
const sharedNS = "picogate-shared-e2e"

// sharedGateway installs the gateway as the README's k3s section does: `picogate setup --shared-identity`
// with the admin's kubeconfig, the fleet ConfigMap's RBAC from deploy/examples, then `picogate serve
// --shared-identity` with the credential setup wrote, all in namespace sharedNS. args are added to
// serve's.
func sharedGateway(t *testing.T, args ...string) *gatewaytest.Gateway {
	t.Helper()
	kc, _ := runSetup(t, "--shared-identity", "--namespace", sharedNS)
	if out, stderr, err := kubectl(t, "", "apply", "--server-side", "--force-conflicts", "--field-manager=picogate-test",
		"--kubeconfig", cluster(t).AdminKubeconfig(), "-f", "deploy/examples/fleet-config-rbac.yaml"); err != nil {
		t.Fatalf("kubectl apply deploy/examples/fleet-config-rbac.yaml: %v: %s%s", err, out, stderr)
	}
	return startGatewayWith(t, kc, append([]string{"--shared-identity", "--namespace", sharedNS}, args...)...)
}

// grantSharedIdentity gives the shared identity, on the package's control plane, the rights an operator
// gives it: the group's ClusterRole and binding of deploy/rbac-shared.yaml, and
// deploy/examples/fleet-config-rbac.yaml (its ConfigMap). Not the file's grant to the gateway's
// ServiceAccount to impersonate the group: the tests' gateways run with the admin's kubeconfig, or with
// a credential of their own from `picogate setup --shared-identity`, and TestSetupCredentialCanDoNothingElse
// checks that the ServiceAccount of a setup without the flag may not.
func grantSharedIdentity(ctx context.Context, c *controlplane.ControlPlane) error {
	dyn, err := dynamic.NewForConfig(c.AdminConfig())
	if err != nil {
		return err
	}
	var objs []*unstructured.Unstructured
	for _, f := range []string{"../../deploy/rbac-shared.yaml", "../../deploy/examples/fleet-config-rbac.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		o, err := setup.DecodeManifest(b)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		objs = append(objs, o...)
	}
	for _, o := range objs {
		if strings.HasSuffix(o.GetName(), "-impersonate") {
			continue
		}
		gvr := rbacv1.SchemeGroupVersion.WithResource(strings.ToLower(o.GetKind()) + "s")
		var r dynamic.ResourceInterface = dyn.Resource(gvr)
		if o.GetNamespace() != "" {
			r = dyn.Resource(gvr).Namespace(o.GetNamespace())
		}
		if _, err := r.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: "picogate-e2e", Force: true}); err != nil {
			return fmt.Errorf("applying %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return nil
}

// auditEvent is what the tests read of an API server audit event.
type auditEvent struct {
	Verb      string `json:"verb"`
	UserAgent string `json:"userAgent"`
	User      struct {
		Username string `json:"username"`
	} `json:"user"`
	ImpersonatedUser *struct {
		Username string   `json:"username"`
		Groups   []string `json:"groups"`
	} `json:"impersonatedUser"`
	ObjectRef *struct {
		Resource, Namespace, Name, Subresource string
	} `json:"objectRef"`
	ResponseStatus struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// auditEvents returns every event of the API server's audit log that keep selects.
func auditEvents(t testing.TB, keep func(*auditEvent) bool) []auditEvent {
	t.Helper()
	return controlplanetest.ReadAudit(t, shared.AuditLog(), keep)
}

// TestSharedIdentityFirmwareWorks: the unmodified reference firmware, with no credential, still
// registers its Node, sends heartbeats and reads its ConfigMap through a gateway installed as the README
// says; it does so as the restricted identity picogate:shared, and its Node carries the device marker.
func TestSharedIdentityFirmwareWorks(t *testing.T) {
	gw := sharedGateway(t)
	firmwareBoot(t, gw.Addr, "", "shared-fw-1", "")
	n, err := admin(cluster(t)).CoreV1().Nodes().Get(context.Background(), "shared-fw-1", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("node not registered: %v", err)
	}
	if len(n.Status.Conditions) != 5 || !registry.IsDeviceNode(n.Labels) {
		t.Errorf("got %d conditions and labels %v, want the firmware's 5 and the device marker", len(n.Status.Conditions), n.Labels)
	}
	evs := auditEvents(t, func(ev *auditEvent) bool {
		return ev.ObjectRef != nil && ev.ObjectRef.Resource == "nodes" && ev.ObjectRef.Name == "shared-fw-1" && ev.UserAgent == "k3s-pico-node/1.0"
	})
	if len(evs) == 0 {
		t.Fatal("no audit event for the firmware's Node")
	}
	for _, ev := range evs {
		if ev.ImpersonatedUser == nil || ev.ImpersonatedUser.Username != "picogate:shared" || !strings.HasPrefix(ev.User.Username, "system:serviceaccount:") {
			t.Errorf("%s nodes/%s: got user %s as %+v, want the gateway's ServiceAccount impersonating picogate:shared", ev.Verb, ev.ObjectRef.Subresource, ev.User.Username, ev.ImpersonatedUser)
		}
	}
}

// TestSharedIdentityIsNotTheAdmin: a LAN client without a credential, on a gateway with
// --shared-identity, can make the reference firmware's requests and nothing else. It cannot read Secrets,
// cordon or taint another board's Node or a real node, list another node's pods, or write a Node that a
// registered device owns. Each request's answer is checked, and the API server's audit log says which
// reached it.
func TestSharedIdentityIsNotTheAdmin(t *testing.T) {
	gw := sharedGateway(t, "--device-rate", "1000", "--device-burst", "1000")
	ctx := context.Background()
	cs := admin(cluster(t))
	// A registered board with its Node, a registered board without one yet, a real node, an unregistered
	// board's Node, a Secret and a pod bound to the registered board.
	dev := addDevice(t, "shared-dev-1", "--namespace", sharedNS)
	addDevice(t, "shared-dev-2", "--namespace", sharedNS)
	waitAuthenticated(t, gw, dev.Token)
	if r := firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, "shared-dev-1", "127.0.0.1"), dev.Header); r.code != 201 {
		t.Fatalf("setup: the registered board's Node: %d %s", r.code, r.body)
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "shared-real-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, "shared-anon-1", "127.0.0.1"), ""); r.code != 201 {
		t.Fatalf("setup: an unregistered board's Node: %d %s", r.code, r.body)
	}
	if _, err := cs.CoreV1().Secrets("kube-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "shared-probe"}, StringData: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "shared-pod-1"},
		Spec: corev1.PodSpec{NodeName: "shared-dev-1", Containers: []corev1.Container{{Name: "c", Image: "picogate.io/apps/blink"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	cordon := `{"spec":{"unschedulable":true}}`
	taint := `{"spec":{"taints":[{"key":"pwned","effect":"NoSchedule"}]}}`
	smp := "Content-Type: application/strategic-merge-patch+json"
	table := []hostile{
		{name: "firmware: create its Node (control)", method: "POST", path: "/api/v1/nodes", body: firmwareNode(t, "shared-anon-2", "127.0.0.1"), wantCode: 201, reaches: true},
		{name: "firmware: heartbeat (control)", method: "PATCH", path: "/api/v1/nodes/shared-anon-2/status", headers: []string{smp}, body: firmwareHeartbeat("127.0.0.1"), wantCode: 200, reaches: true},
		{name: "firmware: its ConfigMap (control)", method: "GET", path: "/api/v1/namespaces/default/configmaps/pico-config", wantCode: 200, reaches: true},
		{name: "read a kube-system Secret", method: "GET", path: "/api/v1/namespaces/kube-system/secrets/shared-probe", wantCode: 403},
		{name: "list kube-system Secrets", method: "GET", path: "/api/v1/namespaces/kube-system/secrets", wantCode: 403},
		{name: "list every Secret", method: "GET", path: "/api/v1/secrets", wantCode: 403},
		{name: "read a device record", method: "GET", path: "/api/v1/namespaces/" + sharedNS + "/secrets/device-shared-dev-1", wantCode: 403},
		{name: "read a Secret, spoofing admin impersonation", method: "GET", path: "/api/v1/namespaces/kube-system/secrets/shared-probe", headers: []string{"Impersonate-User: system:admin", "Impersonate-Group: system:masters"}, wantCode: 403},
		{name: "cordon a registered board's Node", method: "PATCH", path: "/api/v1/nodes/shared-dev-1", headers: []string{smp}, body: cordon, wantCode: 403},
		{name: "taint a registered board's Node", method: "PATCH", path: "/api/v1/nodes/shared-dev-1", headers: []string{smp}, body: taint, wantCode: 403},
		{name: "replace a registered board's Node", method: "PUT", path: "/api/v1/nodes/shared-dev-1", body: `{"metadata":{"name":"shared-dev-1"},"spec":{"unschedulable":true}}`, wantCode: 403},
		{name: "patch a registered board's status", method: "PATCH", path: "/api/v1/nodes/shared-dev-1/status", headers: []string{smp}, body: firmwareHeartbeat("127.0.0.9"), wantCode: 403},
		{name: "cordon a real node", method: "PATCH", path: "/api/v1/nodes/shared-real-1", headers: []string{smp}, body: cordon, wantCode: 403},
		{name: "patch a real node's status", method: "PATCH", path: "/api/v1/nodes/shared-real-1/status", headers: []string{smp}, body: firmwareHeartbeat("127.0.0.9"), wantCode: 403},
		{name: "patch a Node that does not exist", method: "PATCH", path: "/api/v1/nodes/shared-none-1/status", headers: []string{smp}, body: firmwareHeartbeat("127.0.0.9"), wantCode: 403},
		{name: "cordon an unregistered board's Node", method: "PATCH", path: "/api/v1/nodes/shared-anon-1", headers: []string{smp}, body: cordon, wantCode: 403},
		{name: "taint an unregistered board's Node through its status", method: "PATCH", path: "/api/v1/nodes/shared-anon-1/status", headers: []string{smp}, body: taint, wantCode: 200, reaches: true},
		{name: "create a Node a registered board owns", method: "POST", path: "/api/v1/nodes", body: firmwareNode(t, "shared-dev-2", "127.0.0.1"), wantCode: 403},
		{name: "create a Node named like a real node", method: "POST", path: "/api/v1/nodes", body: `{"metadata":{"name":"shared-real-1"}}`, wantCode: 403},
		{name: "create a Node by generateName", method: "POST", path: "/api/v1/nodes", body: `{"metadata":{"generateName":"shared-"}}`, wantCode: 403},
		{name: "create a Node, name given twice", method: "POST", path: "/api/v1/nodes", body: `{"metadata":{"name":"shared-anon-3","name":"shared-dev-2"}}`, wantCode: 400},
		{name: "delete a Node", method: "DELETE", path: "/api/v1/nodes/shared-anon-1", wantCode: 403},
		{name: "read a Node", method: "GET", path: "/api/v1/nodes/shared-dev-1", wantCode: 403},
		{name: "list Nodes", method: "GET", path: "/api/v1/nodes", wantCode: 403},
		{name: "list another node's pods", method: "GET", path: "/api/v1/pods?fieldSelector=spec.nodeName%3Dshared-dev-1", wantCode: 403},
		{name: "watch another node's pods", method: "GET", path: "/api/v1/pods?fieldSelector=spec.nodeName%3Dshared-dev-1&watch=1", wantCode: 403},
		{name: "list every pod", method: "GET", path: "/api/v1/pods", wantCode: 403},
		{name: "read a pod", method: "GET", path: "/api/v1/namespaces/default/pods/shared-pod-1", wantCode: 403},
		{name: "delete a pod", method: "DELETE", path: "/api/v1/namespaces/default/pods/shared-pod-1", wantCode: 403},
		{name: "create a Lease", method: "POST", path: "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body: `{"metadata":{"name":"shared-dev-1"}}`, wantCode: 403},
		{name: "post an event", method: "POST", path: "/api/v1/namespaces/default/events", body: `{"metadata":{"generateName":"x."},"involvedObject":{"kind":"Node","name":"shared-dev-1"}}`, wantCode: 403},
		{name: "cluster-admin binding", method: "POST", path: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body: `{"metadata":{"name":"shared-pwn"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"},"subjects":[{"kind":"Group","name":"picogate:shared","apiGroup":"rbac.authorization.k8s.io"}]}`, wantCode: 403},
		{name: "a ConfigMap nobody granted", method: "GET", path: "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication", wantCode: 403, reaches: true},
	}
	for i, h := range table {
		t.Run(h.name, func(t *testing.T) {
			r := rawRequest(t, gw.Addr, h.local, h.method, h.path, fmt.Sprintf("shared-%02d", i), h.headers, h.body)
			if r.code != h.wantCode {
				t.Errorf("got %d %s, want %d", r.code, trim(r.body), h.wantCode)
			}
		})
	}
	audited := auditedUserAgents(t)
	var reached []string
	for i, h := range table {
		ua := fmt.Sprintf("shared-%02d", i)
		if got := audited[ua] > 0; got != h.reaches {
			t.Errorf("%s: reached the API server: got %v, want %v", h.name, got, h.reaches)
		}
		if audited[ua] > 0 {
			reached = append(reached, h.name)
		}
	}
	sort.Strings(reached)
	t.Logf("%d requests without a credential, %d reached the API server: %s", len(table), len(reached), strings.Join(reached, "; "))
	checkSecurityDoc(t, table)

	// Nothing changed that should not have: the boards' and the real node's specs, and no binding.
	for _, name := range []string{"shared-dev-1", "shared-real-1", "shared-anon-1"} {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pwned := false
		for _, tn := range n.Spec.Taints {
			pwned = pwned || tn.Key == "pwned"
		}
		if n.Spec.Unschedulable || pwned {
			t.Errorf("node %s: got unschedulable=%v taints %v, want it schedulable and without the taint pwned", name, n.Spec.Unschedulable, n.Spec.Taints)
		}
	}
	if n, _ := cs.CoreV1().Nodes().Get(ctx, "shared-real-1", metav1.GetOptions{}); len(n.Status.Conditions) > 0 || registry.IsDeviceNode(n.Labels) {
		t.Errorf("the real node was written: conditions %v labels %v", n.Status.Conditions, n.Labels)
	}
	if _, err := cs.CoreV1().Nodes().Get(ctx, "shared-dev-2", metav1.GetOptions{}); err == nil {
		t.Error("a Node was created under a registered board's name")
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, "shared-pwn", metav1.GetOptions{}); err == nil {
		t.Error("a ClusterRoleBinding was created")
	}
}

// TestSharedIdentityWithAdminKubeconfig: even a gateway started the old way, with the admin's kubeconfig
// and --shared-identity, no longer forwards requests without a credential as the admin.
func TestSharedIdentityWithAdminKubeconfig(t *testing.T) {
	gw := startGateway(t, "--shared-identity")
	ctx := context.Background()
	cs := admin(cluster(t))
	if _, err := cs.CoreV1().Secrets("kube-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "shared-admin-probe"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, "shared-admin-anon-1", "127.0.0.1"), ""); r.code != 201 {
		t.Fatalf("setup: POST node: %d %s", r.code, r.body)
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "shared-admin-real-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, req := range []struct{ method, path, body string }{
		{"GET", "/api/v1/namespaces/kube-system/secrets/shared-admin-probe", ""},
		{"GET", "/api/v1/namespaces/kube-system/secrets", ""},
		{"PATCH", "/api/v1/nodes/shared-admin-anon-1", `{"spec":{"unschedulable":true}}`},
		{"PATCH", "/api/v1/nodes/shared-admin-real-1/status", `{"spec":{"taints":[{"key":"pwned","effect":"NoSchedule"}]}}`},
		{"GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dshared-admin-real-1", ""},
	} {
		if r := rawRequest(t, gw.Addr, "", req.method, req.path, "shared-admin", []string{"Content-Type: application/merge-patch+json"}, req.body); r.code != 403 {
			t.Errorf("%s %s: got %d %s, want 403", req.method, req.path, r.code, trim(r.body))
		}
	}
	// What does reach the API server goes as picogate:shared, not as the admin.
	for _, ev := range auditEvents(t, func(ev *auditEvent) bool {
		return ev.ObjectRef != nil && ev.ObjectRef.Resource == "nodes" && ev.ObjectRef.Name == "shared-admin-anon-1" && ev.Verb == "create"
	}) {
		if ev.ImpersonatedUser == nil || ev.ImpersonatedUser.Username != "picogate:shared" {
			t.Errorf("create nodes/shared-admin-anon-1: got user %s impersonating %+v, want picogate:shared", ev.User.Username, ev.ImpersonatedUser)
		}
	}
}
