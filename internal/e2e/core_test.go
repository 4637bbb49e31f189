package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
	"github.com/picogate/picogate/internal/gateway"
	"github.com/picogate/picogate/internal/gatewaytest"
)

// TestFirmwareSequenceSharedIdentity replays the reference firmware's boot and heartbeat through a gateway
// in --shared-identity mode, the drop-in replacement for the nginx proxy of the original design.
func TestFirmwareSequenceSharedIdentity(t *testing.T) {
	gw := startGateway(t, "--shared-identity")
	firmwareBoot(t, gw.Addr, "", "fw-shared-1", "") // the firmware's requests: nothing else is allowed without a credential
	n, err := admin(cluster(t)).CoreV1().Nodes().Get(context.Background(), "fw-shared-1", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("node not registered: %v", err)
	}
	if len(n.Status.Conditions) != 5 {
		t.Errorf("got %d conditions, want the firmware's 5", len(n.Status.Conditions))
	}
}

// TestWatchEventArrivesPromptly checks a device's watch of its pods is streamed event by event,
// compacted, through the gateway. A device watches its pods with its own credential: the shared identity
// may make only the firmware's three requests.
func TestWatchEventArrivesPromptly(t *testing.T) {
	gw := startGateway(t)
	const name = "watch-node-1"
	dev := addDevice(t, name)
	waitAuthenticated(t, gw, dev.Token)
	if r := firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, name, "127.0.0.1"), dev.Header); r.code != 201 {
		t.Fatalf("POST its Node: got %d %s, want 201", r.code, trim(r.body))
	}
	cs := admin(cluster(t))
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "watched", Namespace: "default"},
		Spec:       corev1.PodSpec{NodeName: name, Containers: []corev1.Container{{Name: "c", Image: "picogate.io/apps/blink"}}},
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	list, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + name})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("GET", gw.URL()+"/api/v1/pods?fieldSelector=spec.nodeName%3D"+name+"&watch=1&resourceVersion="+list.ResourceVersion, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+dev.Token)
	// The answer's header comes from the API server, which sends it once the watch is registered: every
	// change after it reaches this watch, and the time it takes is the stream's alone.
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("watch: got %d %s, want 200", resp.StatusCode, trim(string(b)))
	}
	events := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			events <- sc.Text()
		}
		close(events)
	}()
	changed := time.Now()
	patch := []byte(`{"metadata":{"labels":{"changed":"yes"}}}`)
	if _, err := cs.CoreV1().Pods("default").Patch(ctx, "watched", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("watch ended before the event")
		}
		if d := time.Since(changed); d > time.Second {
			t.Errorf("event arrived %v after the change, want within 1s", d)
		}
		var e struct {
			Type   string
			Object struct {
				Metadata struct{ Labels map[string]string }
			}
		}
		if err := json.Unmarshal([]byte(ev), &e); err != nil || e.Type != "MODIFIED" || e.Object.Metadata.Labels["changed"] != "yes" {
			t.Errorf("got event %q, want the MODIFIED event of the change", ev)
		}
		if strings.Contains(ev, "managedFields") {
			t.Errorf("got managedFields in the watch event, want them dropped")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no watch event within 5s")
	}
}

// TestClientIdentityHeadersHaveNoEffect: headers a client sends to pick an identity never reach the API
// server, whoever the request is forwarded as. Each request reads the fleet's ConfigMap, which the
// shared identity and every device may read (deploy/examples/fleet-config-rbac.yaml), with headers
// naming another user, group, uid and extra: the downgraded identity they name (a node no pod refers
// to) would be refused the read, so it succeeds only if they were dropped, and the API server's audit
// log shows the request arrived as exactly the gateway's identity, with no uid or extra of the client's.
func TestClientIdentityHeadersHaveNoEffect(t *testing.T) {
	gw := startGateway(t, "--shared-identity")
	dev := addDevice(t, "spoof-headers-1")
	waitAuthenticated(t, gw, dev.Token)
	spoofed := []string{
		"Impersonate-User: system:node:nobody",
		"Impersonate-Group: system:nodes",
		"Impersonate-Uid: spoofed-uid",
		"Impersonate-Extra-Scopes: spoofed",
		"X-Remote-User: system:node:nobody",
		"X-Remote-Group: system:nodes",
		"X-Remote-Extra-Scopes: spoofed",
	}
	tests := []struct {
		name, credential, user string
		groups                 []string
	}{
		{"shared identity", "", gateway.SharedUser, []string{gateway.SharedGroup}},
		{"device", dev.Header, "system:node:spoof-headers-1", []string{"system:nodes", "picogate:devices"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ua := fmt.Sprintf("spoof-identity-%02d", i)
			headers := spoofed
			if tt.credential != "" {
				headers = append([]string{tt.credential}, spoofed...)
			}
			r := rawRequest(t, gw.Addr, "", "GET", "/api/v1/namespaces/default/configmaps/pico-config", ua, headers, "")
			if r.code != 200 {
				t.Fatalf("got %d %s, want 200: the spoofed identity headers must be stripped", r.code, trim(r.body))
			}
			var evs []identityAudit
			if !gatewayWaitFor(5*time.Second, func() bool { evs = auditedIdentities(t, ua); return len(evs) > 0 }) {
				t.Fatal("the request is not in the audit log")
			}
			for _, ev := range evs {
				u := ev.ImpersonatedUser
				if u == nil {
					t.Errorf("got no impersonated user, want %s", tt.user)
					continue
				}
				groups := slices.DeleteFunc(slices.Clone(u.Groups), func(g string) bool { return g == "system:authenticated" })
				slices.Sort(groups)
				want := slices.Sorted(slices.Values(tt.groups))
				if u.Username != tt.user || !slices.Equal(groups, want) || u.UID != "" || len(u.Extra) != 0 {
					t.Errorf("impersonated: got user %q groups %v uid %q extra %v, want %s in %v and no uid or extra", u.Username, u.Groups, u.UID, u.Extra, tt.user, want)
				}
			}
		})
	}
}

// identityAudit is what TestClientIdentityHeadersHaveNoEffect reads of an audit event: the whole
// identity a request was impersonated as.
type identityAudit struct {
	ImpersonatedUser *struct {
		Username string              `json:"username"`
		UID      string              `json:"uid"`
		Groups   []string            `json:"groups"`
		Extra    map[string][]string `json:"extra"`
	} `json:"impersonatedUser"`
}

// auditedIdentities returns the audit events of requests sent with User-Agent ua.
func auditedIdentities(t testing.TB, ua string) []identityAudit {
	t.Helper()
	type event struct {
		UserAgent string `json:"userAgent"`
		identityAudit
	}
	var out []identityAudit
	for _, ev := range controlplanetest.ReadAudit(t, shared.AuditLog(), func(ev *event) bool { return ev.UserAgent == ua }) {
		out = append(out, ev.identityAudit)
	}
	return out
}

// TestSourceOutsideAllowlistRefused: a client outside --allow-cidr gets 403 and nothing is forwarded.
func TestSourceOutsideAllowlistRefused(t *testing.T) {
	gw := startGateway(t, "--shared-identity", "--allow-cidr", "127.0.0.2/32")
	r := firmwareDo(t, gw.Addr, "127.0.0.1", "GET", "/version", "", "", "")
	if r.code != 403 || !strings.Contains(r.body, "not allowed") {
		t.Errorf("from 127.0.0.1: got %d %s, want 403", r.code, r.body)
	}
	r = firmwareDo(t, gw.Addr, "127.0.0.2", "GET", "/version", "", "", "")
	if r.code != 200 {
		t.Errorf("from 127.0.0.2: got %d %s, want 200", r.code, r.body)
	}
}

// TestSIGTERMDrainsSlowRequest: a request still arriving when SIGTERM comes is served in full, and the
// gateway exits 0 only after that. Each step waits for the event that proves the drain: the request is
// in the handler (the in-flight gauge), shutdown has begun (the device port refuses new connections,
// which the server's Shutdown closes first) while the process still runs, and only then does the rest
// of the body go out.
func TestSIGTERMDrainsSlowRequest(t *testing.T) {
	gw := startGateway(t, "--shared-identity")
	conn, err := net.Dial("tcp", gw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := firmwareNode(t, "drain-node-1", "127.0.0.1")
	fmt.Fprintf(conn, "POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	_, _ = io.WriteString(conn, body[:100])
	if !gatewaytest.WaitFor(context.Background(), 10*time.Second, func() bool { return inFlight(gw) == 1 }) {
		t.Fatalf("the half-sent request is not in flight 10s after it began (gauge %v)", inFlight(gw))
	}

	gw.Signal(syscall.SIGTERM)
	refused := func() bool {
		c, err := net.DialTimeout("tcp", gw.Addr, time.Second)
		if err != nil {
			return true
		}
		c.Close() // at once: an unused new connection would hold the drain up for 5s
		return false
	}
	if !gatewaytest.WaitFor(context.Background(), 10*time.Second, refused) {
		t.Fatal("the device port still accepts connections 10s after SIGTERM: shutdown has not begun")
	}
	select {
	case <-gw.Exited():
		t.Fatalf("the gateway exited with a request in flight (%v)", gw.Wait(0))
	default:
	}

	_, _ = io.WriteString(conn, body[100:])
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the drained response: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the drained response's body: %v", err)
	}
	if resp.StatusCode != 201 {
		t.Errorf("got %d, want 201 for the request in flight at SIGTERM", resp.StatusCode)
	}
	var node corev1.Node
	if err := json.Unmarshal(got, &node); err != nil || node.Name != "drain-node-1" || int64(len(got)) != resp.ContentLength {
		t.Errorf("got a body of %d bytes (Content-Length %d) naming %q (%v), want the whole created Node drain-node-1", len(got), resp.ContentLength, node.Name, err)
	}
	if err := gw.Wait(30 * time.Second); err != nil {
		t.Errorf("exit: got %v, want exit 0 after draining", err)
	}
}

// inFlight reads picogate_requests_in_flight from the admin port (-1 when it cannot).
func inFlight(gw *gatewaytest.Gateway) float64 {
	resp, err := http.Get("http://" + gw.Admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "picogate_requests_in_flight "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return -1
			}
			return f
		}
	}
	return -1
}

// TestReadyzFollowsAPIServer: /readyz turns false when the API server stops and true when it is back;
// meanwhile devices get 503 with Retry-After, not a hang.
func TestReadyzFollowsAPIServer(t *testing.T) {
	c := cluster(t)
	gw := startGateway(t, "--shared-identity")
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = c.StartAPIServer(context.Background())
		}
	})
	if !gatewaytest.WaitFor(context.Background(), 10*time.Second, func() bool { return !gw.Ready() }) {
		t.Fatal("readyz still true 10s after the API server stopped")
	}
	start := time.Now()
	r := firmwareDo(t, gw.Addr, "", "GET", "/version", "", "", "")
	if r.code != 503 || r.headers["retry-after"] == "" {
		t.Errorf("during the outage: got %d (Retry-After %q), want 503 with Retry-After", r.code, r.headers["retry-after"])
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the device waited %v for its answer, want under 5s", d)
	}
	if err := c.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	restarted = true
	back := time.Now()
	if !gatewaytest.WaitFor(context.Background(), 15*time.Second, gw.Ready) {
		t.Fatal("readyz not true 15s after the API server came back")
	}
	t.Logf("ready again %v after the API server", time.Since(back).Round(10*time.Millisecond))
}

// TestBadStartupConfiguration: a bad flag or kubeconfig is one line on stderr and a non-zero exit.
func TestBadStartupConfiguration(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"serve", "--no-such-flag"}, "unknown flag"},
		{"bad cidr", []string{"serve", "--allow-cidr", "lan"}, "--allow-cidr"},
		{"bad log format", []string{"serve", "--log-format", "xml"}, "--log-format"},
		{"missing kubeconfig", []string{"serve", "--kubeconfig", "/nonexistent/k.yaml"}, "kubeconfig"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := execPicogate(t, tt.args...)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("got exit 0, want non-zero")
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tt.want) {
				t.Errorf("got %q, want one line mentioning %q", out, tt.want)
			}
		})
	}
}
