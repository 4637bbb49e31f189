package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/picogate/picogate/internal/gatewaytest"
	"github.com/picogate/picogate/internal/registry"
)

// TestFirmwareSequenceTokenMode: the firmware with its one added header, forwarded as its own node.
func TestFirmwareSequenceTokenMode(t *testing.T) {
	gw := startGateway(t)
	cred := addDevice(t, "fw-token-1")
	if !strings.HasPrefix(cred.Header, "Authorization: Bearer ") || cred.Token == "" || cred.Auth != "token" {
		t.Fatalf("device add -o json: got %+v, want a token and its header", cred)
	}
	waitAuthenticated(t, gw, cred.Token)
	firmwareSequence(t, gw.Addr, "", "fw-token-1", cred.Header)
}

// TestFirmwareSequenceIPMode: the unmodified firmware on a reserved address, recognised by its source.
func TestFirmwareSequenceIPMode(t *testing.T) {
	gw := startGateway(t)
	cred := addDevice(t, "fw-ip-1", "--auth", "ip", "--ip", "127.0.0.21")
	if cred.Auth != "ip" || cred.Token != "" || cred.Source != "127.0.0.21/32" {
		t.Fatalf("device add -o json: got %+v, want ip mode at 127.0.0.21/32 and no token", cred)
	}
	if !gatewaytest.WaitFor(context.Background(), 5*time.Second, func() bool {
		return firmwareDo(t, gw.Addr, "127.0.0.21", "GET", "/version", "", "", "").code == 200
	}) {
		t.Fatal("ip-mode device not recognised within 5s")
	}
	firmwareSequence(t, gw.Addr, "127.0.0.21", "fw-ip-1", "")
	// Another address on the LAN is nobody.
	if r := firmwareDo(t, gw.Addr, "127.0.0.22", "GET", "/api/v1/nodes/fw-ip-1", "", "", ""); r.code != 401 {
		t.Errorf("from an unregistered address: got %d, want 401", r.code)
	}
}

func waitAuthenticated(t testing.TB, gw *gatewaytest.Gateway, token string) {
	t.Helper()
	if !gatewaytest.WaitFor(context.Background(), 5*time.Second, func() bool {
		return firmwareDo(t, gw.Addr, "", "GET", "/version", "", "", "Authorization: Bearer "+token).code == 200
	}) {
		t.Fatal("new device not accepted by the gateway within 5s")
	}
}

// TestRevocationTakesEffectQuickly measures the time from `device revoke` returning to the first 401,
// and checks an open watch of the device is ended.
func TestRevocationTakesEffectQuickly(t *testing.T) {
	gw := startGateway(t)
	cred := addDevice(t, "revoke-me-1")
	waitAuthenticated(t, gw, cred.Token)
	if r := firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, "revoke-me-1", "127.0.0.1"), cred.Header); r.code != 201 {
		t.Fatalf("POST node: got %d %s", r.code, r.body)
	}
	req, _ := http.NewRequest("GET", gw.URL()+"/api/v1/pods?fieldSelector=spec.nodeName%3Drevoke-me-1&watch=1", nil)
	req.Header.Set("Authorization", "Bearer "+cred.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("watch: %v %v", err, resp)
	}
	watchEnded := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := resp.Body.Read(buf); err != nil {
				close(watchEnded)
				return
			}
		}
	}()

	// Timed from just before the CLI runs: the figure includes the CLI's own start and the write.
	revoked := time.Now()
	picogate(t, "device", "revoke", "revoke-me-1")
	t.Logf("device revoke returned after %v", time.Since(revoked).Round(time.Millisecond))
	var took time.Duration
	for {
		r := firmwareDo(t, gw.Addr, "", "GET", "/api/v1/nodes/revoke-me-1", "", "", cred.Header)
		if r.code == 401 {
			took = time.Since(revoked)
			break
		}
		if time.Since(revoked) > 5*time.Second {
			t.Fatalf("still %d 5s after revoke", r.code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("revocation took effect after %v", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("revocation took %v, want at most 2s", took)
	}
	select {
	case <-watchEnded:
	case <-time.After(2 * time.Second):
		t.Error("the revoked device's open watch was not ended within 2s")
	}
	// Rotation re-enables it with a new token; the old one stays refused.
	out := picogate(t, "device", "rotate", "revoke-me-1", "-o", "json")
	if !strings.Contains(out, `"token": "pgt_`) {
		t.Fatalf("rotate: got %q, want a new token", out)
	}
	if r := firmwareDo(t, gw.Addr, "", "GET", "/version", "", "", cred.Header); r.code != 401 {
		t.Errorf("old token after rotate: got %d, want 401", r.code)
	}
}

// TestDeviceCLI covers list output and the one-line errors of bad input.
func TestDeviceCLI(t *testing.T) {
	addDevice(t, "cli-dev-1")
	addDevice(t, "cli-dev-2", "--auth", "ip", "--ip", "192.168.50.2")
	out := picogate(t, "device", "list")
	for _, want := range []string{"NAME", "cli-dev-1", "token", "cli-dev-2", "192.168.50.2/32"} {
		if !strings.Contains(out, want) {
			t.Errorf("device list: got %q, want %q in it", out, want)
		}
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad name", []string{"device", "add", "Pico_1"}, "invalid device name"},
		{"duplicate", []string{"device", "add", "cli-dev-1"}, "already exists"},
		{"ip without address", []string{"device", "add", "cli-dev-3", "--auth", "ip"}, "--ip"},
		{"unknown mode", []string{"device", "add", "cli-dev-3", "--auth", "magic"}, "unknown auth mode"},
		{"revoke unknown", []string{"device", "revoke", "nobody-here"}, "no device"},
		{"rotate ip device", []string{"device", "rotate", "cli-dev-2"}, "only token"},
		{"no name", []string{"device", "add"}, "NAME"},
		{"batch with a taken name", []string{"device", "add", "--count", "2", "--prefix", "cli-dev-"}, "already exists"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, err := picogateResult(t, tt.args...)
			if err == nil {
				t.Fatal("got exit 0, want an error")
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(lines) != 1 || !strings.Contains(stderr, tt.want) {
				t.Errorf("got %q, want one line mentioning %q", stderr, tt.want)
			}
		})
	}
	// A batch refused for one taken name wrote nothing.
	if _, err := admin(cluster(t)).CoreV1().Secrets("picogate-system").Get(context.Background(), "device-cli-dev-3", metav1.GetOptions{}); err == nil {
		t.Error("a refused add left a record behind")
	}
}

// hostile is one request a compromised or buggy device might send.
type hostile struct {
	name     string
	local    string // source address, "" for 127.0.0.1
	method   string
	path     string
	headers  []string
	body     string
	wantCode int
	reaches  bool // may it reach the API server
}

// TestHostileRequests sends a table of hostile requests as device hostile-1 (token) and hostile-ip-1 (ip
// mode on 127.0.0.31), and counts, from the API server's own audit log, which of them reached it.
func TestHostileRequests(t *testing.T) {
	gw := startGateway(t, "--max-body-bytes", "8192", "--max-header-bytes", "8192", "--device-rate", "1000", "--device-burst", "1000")
	me := addDevice(t, "hostile-1")
	other := addDevice(t, "hostile-2")
	addDevice(t, "hostile-ip-1", "--auth", "ip", "--ip", "127.0.0.31")
	revoked := addDevice(t, "hostile-3")
	picogate(t, "device", "revoke", "hostile-3")
	waitAuthenticated(t, gw, me.Token)
	auth := "Authorization: Bearer " + me.Token
	if r := firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, "hostile-1", "127.0.0.1"), auth); r.code != 201 {
		t.Fatalf("setup: POST node: %d %s", r.code, r.body)
	}
	if r := firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, "hostile-2", "127.0.0.1"), other.Header); r.code != 201 {
		t.Fatalf("setup: POST node 2: %d %s", r.code, r.body)
	}
	node2 := `{"apiVersion":"v1","kind":"Node","metadata":{"name":"hostile-2"}}`
	event := func(field, kind, name string) string {
		return fmt.Sprintf(`{"apiVersion":"v1","kind":"Event","metadata":{"generateName":"hostile-1.","namespace":"default"},"%s":{"kind":"%s","name":"%s","uid":"%s"},"reason":"Hostile","message":"probe","type":"Normal","source":{"component":"kubelet","host":"hostile-1"},"count":1,"firstTimestamp":"2026-12-01T09:00:00Z","lastTimestamp":"2026-12-01T09:00:00Z"}`, field, kind, name, name)
	}
	eventV1 := `{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"generateName":"hostile-1.","namespace":"default"},"regarding":{"kind":"Node","name":"hostile-2"},"reason":"Hostile","action":"Probe","note":"x","type":"Normal","eventTime":"2026-12-01T09:00:00.000000Z","reportingController":"kubelet","reportingInstance":"hostile-1"}`
	crb := `{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"pwn"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"},"subjects":[{"kind":"Group","name":"picogate:devices","apiGroup":"rbac.authorization.k8s.io"}]}`
	table := []hostile{
		{name: "own node (control)", method: "GET", path: "/api/v1/nodes/hostile-1", headers: []string{auth}, wantCode: 200, reaches: true},
		{name: "another node", method: "GET", path: "/api/v1/nodes/hostile-2", headers: []string{auth}, wantCode: 403},
		{name: "patch another node's status", method: "PATCH", path: "/api/v1/nodes/hostile-2/status", headers: []string{auth}, body: `{}`, wantCode: 403},
		{name: "create another node", method: "POST", path: "/api/v1/nodes", headers: []string{auth}, body: node2, wantCode: 403},
		{name: "create a node by generateName", method: "POST", path: "/api/v1/nodes", headers: []string{auth}, body: `{"metadata":{"generateName":"hostile-"}}`, wantCode: 403},
		{name: "create another node, name given twice", method: "POST", path: "/api/v1/nodes", headers: []string{auth}, body: `{"metadata":{"name":"hostile-1","name":"hostile-2"}}`, wantCode: 400},
		{name: "create another node, escaped name given twice", method: "POST", path: "/api/v1/nodes", headers: []string{auth}, body: `{"metadata":{"name":"hostile-1","n\u0061me":"hostile-2"}}`, wantCode: 400},
		{name: "create another node, two objects", method: "POST", path: "/api/v1/nodes", headers: []string{auth}, body: `{"metadata":{"name":"hostile-1"}}{"metadata":{"name":"hostile-2"}}`, wantCode: 400},
		{name: "create another node as YAML", method: "POST", path: "/api/v1/nodes", headers: []string{auth, "Content-Type: application/yaml"}, body: "metadata:\n  name: hostile-2\n", wantCode: 415},
		{name: "create another node as protobuf", method: "POST", path: "/api/v1/nodes", headers: []string{auth, "Content-Type: application/vnd.kubernetes.protobuf"}, body: "k8s\x00\n\x0c\n\x02v1\x12\x04Node", wantCode: 415},
		{name: "event about another node", method: "POST", path: "/api/v1/namespaces/default/events", headers: []string{auth}, body: event("involvedObject", "Node", "hostile-2"), wantCode: 403},
		{name: "event about another node, no kind", method: "POST", path: "/api/v1/namespaces/default/events", headers: []string{auth}, body: event("involvedObject", "", "hostile-2"), wantCode: 403},
		{name: "event about another node, in kube-system", method: "POST", path: "/api/v1/namespaces/kube-system/events", headers: []string{auth}, body: event("involvedObject", "Node", "hostile-2"), wantCode: 403},
		{name: "event related to another node", method: "POST", path: "/api/v1/namespaces/default/events", headers: []string{auth}, body: strings.Replace(event("involvedObject", "Node", "hostile-1"), `"reason"`, `"related":{"kind":"Node","name":"hostile-2"},"reason"`, 1), wantCode: 403},
		{name: "event about another node, events.k8s.io", method: "POST", path: "/apis/events.k8s.io/v1/namespaces/default/events", headers: []string{auth}, body: eventV1, wantCode: 403},
		{name: "event about another node, involvedObject given twice", method: "POST", path: "/api/v1/namespaces/default/events", headers: []string{auth}, body: strings.Replace(event("involvedObject", "Node", "hostile-1"), `"reason"`, `"involvedObject":{"kind":"Node","name":"hostile-2"},"reason"`, 1), wantCode: 400},
		{name: "event about own node (control)", method: "POST", path: "/api/v1/namespaces/default/events", headers: []string{auth}, body: event("involvedObject", "Node", "hostile-1"), wantCode: 201, reaches: true},
		{name: "delete own node", method: "DELETE", path: "/api/v1/nodes/hostile-1", headers: []string{auth}, wantCode: 403},
		{name: "delete all nodes", method: "DELETE", path: "/api/v1/nodes", headers: []string{auth}, wantCode: 403},
		{name: "list nodes", method: "GET", path: "/api/v1/nodes", headers: []string{auth}, wantCode: 403},
		{name: "another node's lease", method: "PUT", path: "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/hostile-2", headers: []string{auth}, body: `{}`, wantCode: 403},
		{name: "spoofed impersonation to admin", method: "GET", path: "/api/v1/namespaces/kube-system/secrets/any", headers: []string{auth, "Impersonate-User: system:admin", "Impersonate-Group: system:masters"}, wantCode: 403, reaches: true},
		{name: "spoofed impersonation, no credential", method: "GET", path: "/api/v1/nodes/hostile-2", headers: []string{"Impersonate-User: system:node:hostile-2", "Impersonate-Group: system:nodes"}, wantCode: 401},
		{name: "front-proxy headers", method: "GET", path: "/api/v1/nodes/hostile-2", headers: []string{"X-Remote-User: system:node:hostile-2", "X-Remote-Group: system:masters"}, wantCode: 401},
		{name: "another device's token", method: "GET", path: "/api/v1/nodes/hostile-1", headers: []string{other.Header}, wantCode: 403},
		{name: "ip device from the wrong address", local: "127.0.0.32", method: "GET", path: "/api/v1/nodes/hostile-ip-1", wantCode: 401},
		{name: "ip device address with another's token", local: "127.0.0.31", method: "GET", path: "/api/v1/nodes/hostile-ip-1", headers: []string{other.Header}, wantCode: 403},
		{name: "encoded slash", method: "GET", path: "/api/v1/nodes/hostile-1%2Fstatus", headers: []string{auth}, wantCode: 400},
		{name: "encoded dot dot", method: "GET", path: "/api/v1/nodes/hostile-1/%2e%2e/hostile-2", headers: []string{auth}, wantCode: 400},
		{name: "dot dot", method: "GET", path: "/api/v1/nodes/hostile-1/../hostile-2", headers: []string{auth}, wantCode: 400},
		{name: "double slash", method: "GET", path: "/api/v1//nodes/hostile-2", headers: []string{auth}, wantCode: 400},
		{name: "trailing dot", method: "GET", path: "/api/v1/nodes/hostile-1.", headers: []string{auth}, wantCode: 400},
		{name: "trailing slash", method: "GET", path: "/api/v1/nodes/hostile-1/", headers: []string{auth}, wantCode: 400},
		{name: "method override", method: "POST", path: "/api/v1/nodes", headers: []string{auth, "X-HTTP-Method-Override: DELETE"}, body: `{}`, wantCode: 400},
		{name: "list all pods", method: "GET", path: "/api/v1/pods", headers: []string{auth}, wantCode: 403},
		{name: "watch all pods", method: "GET", path: "/api/v1/pods?watch=1", headers: []string{auth}, wantCode: 403},
		{name: "pods of another node", method: "GET", path: "/api/v1/pods?fieldSelector=spec.nodeName%3Dhostile-2", headers: []string{auth}, wantCode: 403},
		{name: "duplicate field selector", method: "GET", path: "/api/v1/pods?fieldSelector=spec.nodeName%3Dhostile-1&fieldSelector=", headers: []string{auth}, wantCode: 400},
		{name: "own pods (control)", method: "GET", path: "/api/v1/pods?fieldSelector=spec.nodeName%3Dhostile-1", headers: []string{auth}, wantCode: 200, reaches: true},
		{name: "list secrets", method: "GET", path: "/api/v1/namespaces/kube-system/secrets", headers: []string{auth}, wantCode: 403},
		{name: "device registry secrets", method: "GET", path: "/api/v1/namespaces/picogate-system/secrets", headers: []string{auth}, wantCode: 403},
		{name: "another device's record", method: "GET", path: "/api/v1/namespaces/picogate-system/secrets/device-hostile-2", headers: []string{auth}, wantCode: 403},
		{name: "unrelated secret", method: "GET", path: "/api/v1/namespaces/kube-system/secrets/bootstrap-token-abcdef", headers: []string{auth}, wantCode: 403, reaches: true},
		{name: "create a pod", method: "POST", path: "/api/v1/namespaces/default/pods", headers: []string{auth}, body: `{}`, wantCode: 403},
		{name: "delete a namespace", method: "DELETE", path: "/api/v1/namespaces/default", headers: []string{auth}, wantCode: 403},
		{name: "cluster-admin binding", method: "POST", path: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", headers: []string{auth}, body: crb, wantCode: 403},
		{name: "namespace-wide configmap write", method: "POST", path: "/api/v1/namespaces/default/configmaps", headers: []string{auth}, body: `{}`, wantCode: 403},
		{name: "exec upgrade", method: "GET", path: "/api/v1/namespaces/default/pods/p/exec?command=sh", headers: []string{auth, "Upgrade: SPDY/3.1", "Connection: Upgrade"}, wantCode: 403},
		{name: "oversized body", method: "POST", path: "/api/v1/nodes", headers: []string{auth}, body: `{"x":"` + strings.Repeat("a", 9000) + `"}`, wantCode: 413},
		{name: "revoked token", method: "GET", path: "/api/v1/nodes/hostile-3", headers: []string{revoked.Header}, wantCode: 401},
		{name: "malformed bearer", method: "GET", path: "/api/v1/nodes/hostile-1", headers: []string{"Authorization: Bearer"}, wantCode: 401},
		{name: "bearer with junk", method: "GET", path: "/api/v1/nodes/hostile-1", headers: []string{"Authorization: Bearer " + me.Token + " extra"}, wantCode: 401},
		{name: "basic auth", method: "GET", path: "/api/v1/nodes/hostile-1", headers: []string{"Authorization: Basic YWRtaW46YWRtaW4="}, wantCode: 401},
		{name: "absurdly long header", method: "GET", path: "/api/v1/nodes/hostile-1", headers: []string{auth, "X-Junk: " + strings.Repeat("j", 20000)}, wantCode: 431},
		{name: "proxy subresource", method: "GET", path: "/api/v1/nodes/hostile-1/proxy/metrics", headers: []string{auth}, wantCode: 403},
		{name: "legacy watch path", method: "GET", path: "/api/v1/watch/pods", headers: []string{auth}, wantCode: 403},
	}
	if len(table) < 30 {
		t.Fatalf("got %d hostile requests, want at least 30", len(table))
	}
	for i, h := range table {
		t.Run(h.name, func(t *testing.T) {
			ua := fmt.Sprintf("hostile-%02d", i)
			r := rawRequest(t, gw.Addr, h.local, h.method, h.path, ua, h.headers, h.body)
			if r.code != h.wantCode {
				t.Errorf("got %d %s, want %d", r.code, trim(r.body), h.wantCode)
			}
			if r.code >= 400 && r.code != 431 && !strings.Contains(r.body, `"kind":"Status"`) {
				t.Errorf("got body %q, want a Kubernetes Status", trim(r.body))
			}
		})
	}
	audited := auditedUserAgents(t)
	var reached []string
	for i, h := range table {
		ua := fmt.Sprintf("hostile-%02d", i)
		if got := audited[ua] > 0; got != h.reaches {
			t.Errorf("%s: reached the API server: got %v, want %v", h.name, got, h.reaches)
		}
		if audited[ua] > 0 {
			reached = append(reached, h.name)
		}
	}
	sort.Strings(reached)
	t.Logf("%d hostile requests, %d reached the API server (all refused there unless a control): %s", len(table), len(reached), strings.Join(reached, "; "))
	checkSecurityDoc(t, table)
	// Nothing changed: no binding, hostile-2 untouched.
	if _, err := admin(cluster(t)).RbacV1().ClusterRoleBindings().Get(context.Background(), "pwn", metav1.GetOptions{}); err == nil {
		t.Error("a device created a ClusterRoleBinding")
	}
}

func trim(s string) string {
	if len(s) > 160 {
		return s[:160] + "…"
	}
	return s
}

// TestDeviceNodeCarriesMarker: a Node a device creates through the gateway is labelled as a device's,
// whatever label the device sent.
func TestDeviceNodeCarriesMarker(t *testing.T) {
	gw := startGateway(t)
	cred := addDevice(t, "marked-1")
	waitAuthenticated(t, gw, cred.Token)
	body := strings.Replace(firmwareNode(t, "marked-1", "127.0.0.1"), `"labels":{`, `"labels":{"`+registry.NodeMarkerLabel+`":"false",`, 1)
	if !strings.Contains(body, registry.NodeMarkerLabel) {
		t.Fatalf("test body has no labels to add the marker to: %s", body)
	}
	r := firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", body, cred.Header)
	if r.code != 201 {
		t.Fatalf("POST node: got %d %s, want 201", r.code, r.body)
	}
	checkFirmwareFits(t, "POST node", r)
	n, err := admin(cluster(t)).CoreV1().Nodes().Get(context.Background(), "marked-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !registry.IsDeviceNode(n.Labels) || n.Labels["kubernetes.io/arch"] != "arm" {
		t.Errorf("got labels %v, want the firmware's and %s=true", n.Labels, registry.NodeMarkerLabel)
	}
}

// TestDeviceNamedLikeARealNode: a device whose name a real node has taken (a kubelet joined under it
// before the board ever booted: `device add` refuses the name of an existing real node, but not one that
// comes later) is refused every request at the gateway. Before, it acted as that node: read it, patched
// its status, listed its pods.
func TestDeviceNamedLikeARealNode(t *testing.T) {
	gw := startGateway(t)
	ctx := context.Background()
	cred := addDevice(t, "worker-real-1")
	if _, err := admin(cluster(t)).CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-real-1",
		Labels: map[string]string{"kubernetes.io/hostname": "worker-real-1"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	auth := "Authorization: Bearer " + cred.Token
	var r firmwareResponse
	// The wait's own polls are outside the audited "real-name-" prefix: until the gateway's Node view has
	// the new Node, a poll is forwarded as the device, which is the race being waited out, not a finding.
	if !gatewaytest.WaitFor(ctx, 5*time.Second, func() bool {
		r = rawRequest(t, gw.Addr, "", "GET", "/version", "wait-real-name", []string{auth}, "")
		return r.code == 403
	}) {
		t.Fatalf("GET /version: got %d %s, want 403 within 5s", r.code, r.body)
	}
	if r.code != 403 || !strings.Contains(r.body, "node worker-real-1 is not a picogate device node") {
		t.Fatalf("GET /version: got %d %s, want 403 naming the node", r.code, r.body)
	}
	for i, req := range []struct{ method, path, body string }{
		{"GET", "/api/v1/nodes/worker-real-1", ""},
		{"PATCH", "/api/v1/nodes/worker-real-1/status", `{"status":{"conditions":[{"type":"Ready","status":"False"}]}}`},
		{"GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dworker-real-1", ""},
		{"POST", "/api/v1/nodes", `{"metadata":{"name":"worker-real-1"}}`},
	} {
		ua := fmt.Sprintf("real-name-%02d", i)
		if r := rawRequest(t, gw.Addr, "", req.method, req.path, ua, []string{auth}, req.body); r.code != 403 {
			t.Errorf("%s %s: got %d %s, want 403", req.method, req.path, r.code, trim(r.body))
		}
	}
	audited := auditedUserAgents(t)
	for ua, n := range audited {
		if strings.HasPrefix(ua, "real-name-") && n > 0 {
			t.Errorf("%s reached the API server %d times, want never", ua, n)
		}
	}
}

// TestRealNodeJoiningLaterIsSafe: a real node that joins after a device was registered under its name
// (the device's own Node gone, the real one created without the marker) is safe from the device as soon
// as the gateway's view of the Nodes has it.
func TestRealNodeJoiningLaterIsSafe(t *testing.T) {
	gw := startGateway(t)
	ctx := context.Background()
	cs := admin(cluster(t))
	cred := addDevice(t, "late-join-1")
	waitAuthenticated(t, gw, cred.Token)
	firmwareSequence(t, gw.Addr, "", "late-join-1", cred.Header)
	if err := cs.CoreV1().Nodes().Delete(ctx, "late-join-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "late-join-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	joined := time.Now()
	var r firmwareResponse
	if !gatewaytest.WaitFor(ctx, 5*time.Second, func() bool {
		r = firmwareDo(t, gw.Addr, "", "GET", "/version", "", "", cred.Header)
		return r.code == 403
	}) {
		t.Fatalf("device still answered %d 5s after a real node took its name", r.code)
	}
	t.Logf("the device was refused %v after the real node joined", time.Since(joined).Round(time.Millisecond))
	if !strings.Contains(r.body, "is not a picogate device node") {
		t.Errorf("got %s, want the reason", r.body)
	}
	hb := firmwareDo(t, gw.Addr, "", "PATCH", "/api/v1/nodes/late-join-1/status", "application/strategic-merge-patch+json", firmwareHeartbeat("127.0.0.1"), cred.Header)
	if hb.code != 403 {
		t.Errorf("heartbeat for the real node: got %d %s, want 403", hb.code, hb.body)
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, "late-join-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Status.Conditions) != 0 {
		t.Errorf("the real node's status was written: %v", n.Status.Conditions)
	}
}

// checkSecurityDoc keeps docs/security.md's tables the tests' own: every row must be there with its
// answer and whether it may reach the API server.
func checkSecurityDoc(t *testing.T, table []hostile) {
	t.Helper()
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range table {
		reached := "| no |"
		if h.reaches {
			reached = "| yes"
		}
		if row := fmt.Sprintf("| %s | %d %s", h.name, h.wantCode, reached); !strings.Contains(string(doc), row) {
			t.Errorf("docs/security.md: no row %q", row)
		}
	}
}
