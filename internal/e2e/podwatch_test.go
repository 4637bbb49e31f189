package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/picogate/picogate/internal/compact"
	"github.com/picogate/picogate/internal/gatewaytest"
)

// podWatchDevice registers a device and posts its Node through gw.
func podWatchDevice(t *testing.T, gw *gatewaytest.Gateway, name string) credential {
	t.Helper()
	dev := addDevice(t, name)
	waitAuthenticated(t, gw, dev.Token)
	if r := firmwareDo(t, gw.Addr, "", "POST", "/api/v1/nodes", "application/json", firmwareNode(t, name, "127.0.0.1"), dev.Header); r.code != 201 {
		t.Fatalf("POST the Node of %s: got %d %s, want 201", name, r.code, trim(r.body))
	}
	return dev
}

// metricValue reads one series of the gateway's metrics (series is the name with its labels); -1 when
// it is absent.
func metricValue(t *testing.T, gw *gatewaytest.Gateway, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + gw.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return -1
}

// devicePodList lists the device's pods through the gateway, as the device library does, and returns
// the list's resourceVersion and the pods' names.
func devicePodList(t *testing.T, gw *gatewaytest.Gateway, dev credential) (string, []string) {
	t.Helper()
	req, _ := http.NewRequest("GET", gw.URL()+"/api/v1/pods?fieldSelector="+url.QueryEscape("spec.nodeName="+dev.Name), nil)
	req.Header.Set("Authorization", "Bearer "+dev.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l struct {
		Metadata struct{ ResourceVersion string }
		Items    []struct{ Metadata struct{ Name string } }
	}
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the device's pod list: got %d, %v", resp.StatusCode, err)
	}
	var names []string
	for _, it := range l.Items {
		names = append(names, it.Metadata.Name)
	}
	return l.Metadata.ResourceVersion, names
}

// podEvent is one watch event as the device got it, its object's bytes untouched.
type podEvent struct {
	Type   string
	Object json.RawMessage
	line   string
}

func (e podEvent) name() string {
	var o struct{ Metadata struct{ Name string } }
	_ = json.Unmarshal(e.Object, &o)
	return e.Type + " " + o.Metadata.Name
}

// deviceWatch opens the device's watch of its pods through the gateway; the events arrive on the
// channel, which is closed when the stream ends.
func deviceWatch(t *testing.T, gw *gatewaytest.Gateway, dev credential, node, query string) (int, <-chan podEvent) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", gw.URL()+"/api/v1/pods?fieldSelector="+url.QueryEscape("spec.nodeName="+node)+"&watch=1&"+query, nil)
	req.Header.Set("Authorization", "Bearer "+dev.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan podEvent, 64)
	if resp.StatusCode != 200 {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		close(events)
		return resp.StatusCode, events
	}
	go func() {
		defer resp.Body.Close()
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e podEvent
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				e.Type = "UNPARSABLE"
			}
			e.line = sc.Text()
			events <- e
		}
	}()
	return 200, events
}

// nextEvent waits for the next event that is not a bookmark; ok is false when the stream ended.
func nextEvent(t *testing.T, events <-chan podEvent) (podEvent, bool) {
	t.Helper()
	for {
		select {
		case e, ok := <-events:
			if !ok || e.Type != "BOOKMARK" {
				return e, ok
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no watch event within 10s")
		}
	}
}

// TestSharedPodWatch: with the shared pod watch (the default), a device's watch of its own pods is
// served from the gateway's one watch, not relayed: it sees its pods ADDED, MODIFIED and DELETED, each
// object exactly what the API server holds (compacted), never another node's pod; a watch of another
// node's pods is the API server's to refuse; revoking the device ends its watch.
func TestSharedPodWatch(t *testing.T) {
	gw := startGateway(t)
	a, b := podWatchDevice(t, gw, "pw-node-a"), podWatchDevice(t, gw, "pw-node-b")
	if !gatewaytest.WaitFor(context.Background(), 10*time.Second, func() bool { return metricValue(t, gw, "picogate_pod_watch_up") == 1 }) {
		t.Fatal("the shared pod watch was not up within 10s")
	}
	cs := admin(cluster(t))
	ctx := context.Background()
	newPod := func(name, node string) {
		t.Helper()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "picogate.io/apps/blink"}}}}
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	newPod("pw-a-1", a.Name)
	newPod("pw-b-1", b.Name)
	rv, names := devicePodList(t, gw, a)
	if strings.Join(names, ",") != "pw-a-1" {
		t.Fatalf("the device's list: got %q, want pw-a-1", names)
	}
	code, events := deviceWatch(t, gw, a, a.Name, "resourceVersion="+rv+"&allowWatchBookmarks=true&timeoutSeconds=120")
	if code != 200 {
		t.Fatalf("the device's watch: got %d, want 200", code)
	}
	if got := metricValue(t, gw, "picogate_pod_watches_served"); got != 1 {
		t.Fatalf("watches served from the shared watch: got %v, want 1 (the watch was relayed)", got)
	}
	if got := metricValue(t, gw, `picogate_pod_watch_probes_total{kind="device"}`); got > 0 {
		t.Errorf("authorization probes as the device: got %v, want none (its own list, just answered 200, authorizes it)", got)
	}
	// Another node's pod changes, then the device's own pods do.
	newPod("pw-b-2", b.Name)
	if _, err := cs.CoreV1().Pods("default").Patch(ctx, "pw-a-1", types.MergePatchType, []byte(`{"metadata":{"labels":{"changed":"yes"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	newPod("pw-a-2", a.Name)
	zero := int64(0)
	if err := cs.CoreV1().Pods("default").Delete(ctx, "pw-a-2", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for !strings.HasPrefix(strings.Join(got, ","), "MODIFIED pw-a-1") || got[len(got)-1] != "DELETED pw-a-2" {
		e, ok := nextEvent(t, events)
		if !ok {
			t.Fatalf("the watch ended after %q", got)
		}
		got = append(got, e.name())
		if strings.Contains(e.line, "pw-node-b") || strings.Contains(e.line, "pw-b-") {
			t.Fatalf("the device got another node's pod: %s", e.line)
		}
		if e.Type == "MODIFIED" && strings.HasSuffix(e.name(), "pw-a-1") {
			raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/namespaces/default/pods/pw-a-1").DoRaw(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want, err := compact.Append(nil, raw)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(e.Object, want) {
				t.Errorf("the served pod differs from the API server's:\n got %s\nwant %s", e.Object, want)
			}
		}
	}
	if got[1] != "ADDED pw-a-2" {
		t.Errorf("events: got %q, want MODIFIED pw-a-1, ADDED pw-a-2, …, DELETED pw-a-2", got)
	}
	// Another node's pods: relayed, and the API server refuses them to this device.
	if code, _ := deviceWatch(t, gw, a, b.Name, "resourceVersion="+rv); code != 403 {
		t.Errorf("a watch of another node's pods: got %d, want 403 from the API server", code)
	}
	revoked := time.Now()
	picogate(t, "device", "revoke", a.Name)
	for {
		select {
		case _, ok := <-events:
			if ok {
				continue
			}
			t.Logf("the served watch ended %v after device revoke was started", time.Since(revoked).Round(time.Millisecond))
		case <-time.After(5 * time.Second):
			t.Fatal("the revoked device's served watch was still open 5s after device revoke")
		}
		break
	}
}

// TestSharedPodWatchGoneAndOff: a watch from a resourceVersion older than the gateway holds gets the API
// server's answer, one ERROR event with a 410 Status; with --shared-pod-watch=false watches are relayed
// as before and still work.
func TestSharedPodWatchGoneAndOff(t *testing.T) {
	gw := startGateway(t)
	dev := podWatchDevice(t, gw, "pw-node-c")
	if !gatewaytest.WaitFor(context.Background(), 10*time.Second, func() bool { return metricValue(t, gw, "picogate_pod_watch_up") == 1 }) {
		t.Fatal("the shared pod watch was not up within 10s")
	}
	devicePodList(t, gw, dev)
	code, events := deviceWatch(t, gw, dev, dev.Name, "resourceVersion=2")
	e, ok := nextEvent(t, events)
	var st struct{ Code int }
	_ = json.Unmarshal(e.Object, &st)
	if code != 200 || !ok || e.Type != "ERROR" || st.Code != 410 {
		t.Fatalf("a watch from resourceVersion 2: got %d %q, want 200 and an ERROR 410 event", code, e.line)
	}
	if _, ok := nextEvent(t, events); ok {
		t.Error("the watch went on after its 410")
	}
	if got := metricValue(t, gw, `picogate_pod_watch_requests_total{result="gone"}`); got != 1 {
		t.Errorf("watches answered 410 by the gateway: got %v, want 1", got)
	}

	off := startGateway(t, "--shared-pod-watch=false")
	waitAuthenticated(t, off, dev.Token)
	rv, _ := devicePodList(t, off, dev)
	code, events = deviceWatch(t, off, dev, dev.Name, "resourceVersion="+rv)
	if code != 200 {
		t.Fatalf("a relayed watch: got %d, want 200", code)
	}
	cs := admin(cluster(t))
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pw-c-1", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: dev.Name, Containers: []corev1.Container{{Name: "c", Image: "picogate.io/apps/blink"}}}}
	if _, err := cs.CoreV1().Pods("default").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if e, ok := nextEvent(t, events); !ok || e.name() != "ADDED pw-c-1" {
		t.Errorf("a relayed watch: got %q, want ADDED pw-c-1", e.line)
	}
	if got := metricValue(t, off, "picogate_pod_watches_served"); got != -1 {
		t.Errorf("with --shared-pod-watch=false: got picogate_pod_watches_served %v, want no such series", got)
	}
}

// TestSharedPodWatchForbidden: a gateway whose credential may not list and watch pods cluster-wide
// relays every pod watch, which still works, and says why.
func TestSharedPodWatchForbidden(t *testing.T) {
	c := cluster(t)
	cs := admin(c)
	const user, suffix = "picogate-e2e-nopods", "-e2e-nopods"
	if err := applyManifest(cs, filepath.Join("..", "..", "deploy", "rbac.yaml"), suffix, user); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	role, err := cs.RbacV1().ClusterRoles().Get(ctx, "picogate-gateway"+suffix, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var rules []rbacv1.PolicyRule
	for _, r := range role.Rules {
		if !slices.Contains(r.Resources, "pods") {
			rules = append(rules, r)
		}
	}
	role.Rules = rules
	if _, err := cs.RbacV1().ClusterRoles().Update(ctx, role, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	cert, key, err := c.IssueClientCert(user, user)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := c.WriteKubeconfig(kubeconfig, cert, key); err != nil {
		t.Fatal(err)
	}
	gw := gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: kubeconfig})
	dev := podWatchDevice(t, gw, "pw-node-d")
	rv, _ := devicePodList(t, gw, dev)
	code, events := deviceWatch(t, gw, dev, dev.Name, "resourceVersion="+rv)
	if code != 200 {
		t.Fatalf("the device's watch: got %d, want 200 (relayed)", code)
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pw-d-1", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: dev.Name, Containers: []corev1.Container{{Name: "c", Image: "picogate.io/apps/blink"}}}}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if e, ok := nextEvent(t, events); !ok || e.name() != "ADDED pw-d-1" {
		t.Errorf("the relayed watch: got %q, want ADDED pw-d-1", e.line)
	}
	if up, relayed := metricValue(t, gw, "picogate_pod_watch_up"), metricValue(t, gw, `picogate_pod_watch_requests_total{result="relayed-not-ready"}`); up != 0 || relayed != 1 {
		t.Errorf("picogate_pod_watch_up %v, relayed-not-ready %v: want 0 and 1", up, relayed)
	}
	if !strings.Contains(gw.Log(), "may not list and watch pods cluster-wide") {
		t.Error("the gateway's log does not say why pod watches are relayed")
	}
}
