package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

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

// TestWatchEventArrivesPromptly checks a watch is streamed event by event, compacted, through the gateway.
func TestWatchEventArrivesPromptly(t *testing.T) {
	gw := startGateway(t, "--shared-identity")
	cs := admin(cluster(t))
	ctx := context.Background()
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "watch-node-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "watched", Namespace: "default"},
		Spec:       corev1.PodSpec{NodeName: "watch-node-1", Containers: []corev1.Container{{Name: "c", Image: "picogate.io/apps/blink"}}},
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	list, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=watch-node-1"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(gw.URL() + "/api/v1/pods?fieldSelector=spec.nodeName%3Dwatch-node-1&watch=1&resourceVersion=" + list.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("watch: got %d, want 200", resp.StatusCode)
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
	time.Sleep(200 * time.Millisecond) // let the watch be established upstream
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
		var e struct{ Type string }
		if err := json.Unmarshal([]byte(ev), &e); err != nil || e.Type != "MODIFIED" {
			t.Errorf("got event %q, want a MODIFIED event", ev)
		}
		if strings.Contains(ev, "managedFields") {
			t.Errorf("got managedFields in the watch event, want them dropped")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no watch event within 5s")
	}
}

// TestClientIdentityHeadersHaveNoEffect: headers a device sends to pick an identity never reach the API
// server. The spoofed headers here would downgrade the shared (admin) identity to a node, which the Node
// authorizer refuses a ConfigMap read; the read succeeding proves they were stripped.
func TestClientIdentityHeadersHaveNoEffect(t *testing.T) {
	gw := startGateway(t, "--shared-identity")
	req, _ := http.NewRequest("GET", gw.URL()+"/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication", nil)
	req.Header.Set("Impersonate-User", "system:node:nobody")
	req.Header.Add("Impersonate-Group", "system:nodes")
	req.Header.Set("X-Remote-User", "system:node:nobody")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("got %d %s, want 200: the spoofed identity headers must be stripped", resp.StatusCode, body)
	}
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
