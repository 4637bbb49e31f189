//go:build record

package device

// This file records the API server's answers to the agent's requests into
// testdata/api/, against a real kube-apiserver with the Node authorizer and
// NodeRestriction, acting as system:node:pico-1. It needs client-go and the
// control plane binaries, so it is behind a build tag and the package itself
// stays standard-library only:
//
//	make controlplane && go test -tags record -run TestRecordAPI ./device/
//
// The recorded bodies are what the parsing tests read; sizes.json holds the
// byte counts quoted in docs/device-protocol.md.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/picogate/picogate/internal/controlplane"
	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
)

type recSize struct {
	Status            int  `json:"status"`
	BodyBytes         int  `json:"body_bytes"`
	CompactBodyBytes  int  `json:"compact_body_bytes"`
	HeaderBytes       int  `json:"header_bytes"`
	CompactHeaderByte int  `json:"compact_header_bytes"`
	Chunked           bool `json:"chunked"`
	RequestBodyBytes  int  `json:"request_body_bytes"`
}

type recorder struct {
	t     *testing.T
	base  string
	admin *http.Client
	node  *http.Client
	mu    sync.Mutex
	sizes map[string]recSize
}

func TestRecordAPI(t *testing.T) {
	cp := controlplanetest.Start(t, controlplane.Config{APIServerArgs: []string{"--watch-cache-sizes=pods#10"}})
	r := &recorder{t: t, base: cp.URL(), sizes: map[string]recSize{}}
	r.admin = httpClient(t, cp.AdminConfig())
	nodeCfg := cp.AdminConfig()
	nodeCfg.Impersonate = rest.ImpersonationConfig{UserName: "system:node:pico-1", Groups: []string{"system:nodes", "picogate:devices"}}
	r.node = httpClient(t, nodeCfg)
	dir := filepath.Join("testdata", "api")

	spec, st := testSpec(), testNodeStatus()
	now := time.Now().UTC().Truncate(time.Second)
	st.conds = newConditions(now)

	code, node := r.do("node-create", r.node, "POST", "/api/v1/nodes?fieldValidation=Strict", ctypeJSON, appendNodeCreate(nil, spec, st, now))
	want(t, "node create", code, 201)
	uid := mustJSON(t, node).get("metadata", "uid").strOr("")
	code, _ = r.do("node-create-conflict", r.node, "POST", "/api/v1/nodes?fieldValidation=Strict", ctypeJSON, appendNodeCreate(nil, spec, st, now))
	want(t, "second node create", code, 409)
	code, _ = r.do("node-labels-patch", r.node, "PATCH", "/api/v1/nodes/pico-1?fieldValidation=Strict", ctypeSMP, appendNodeLabelsPatch(nil, spec))
	want(t, "node labels patch", code, 200)
	code, _ = r.do("node-status-patch", r.node, "PATCH", "/api/v1/nodes/pico-1/status?fieldValidation=Strict", ctypeSMP, appendNodeStatusPatch(nil, spec, st, now.Add(time.Second), false))
	want(t, "node status patch", code, 200)
	code, _ = r.do("node-status-full", r.node, "PATCH", "/api/v1/nodes/pico-1/status?fieldValidation=Strict", ctypeSMP, appendNodeStatusPatch(nil, spec, st, now.Add(2*time.Second), true))
	want(t, "full node status patch", code, 200)
	other := *spec
	other.name = "pico-2"
	code, _ = r.do("admin-node-create", r.admin, "POST", "/api/v1/nodes", ctypeJSON, appendNodeCreate(nil, &other, st, now))
	want(t, "admin creates pico-2", code, 201)
	code, _ = r.do("node-other-forbidden", r.node, "PATCH", "/api/v1/nodes/pico-2/status", ctypeSMP, appendNodeStatusPatch(nil, &other, st, now, false))
	want(t, "patching another node", code, 403)
	code, _ = r.do("node-get", r.node, "GET", "/api/v1/nodes/pico-1", "", nil)
	want(t, "node get", code, 200)

	leases := "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
	code, _ = r.do("lease-create", r.node, "POST", leases+"?fieldValidation=Strict", ctypeJSON, appendLeaseCreate(nil, "pico-1", uid, 40*time.Second, now))
	want(t, "lease create", code, 201)
	code, _ = r.do("lease-renew", r.node, "PATCH", leases+"/pico-1?fieldValidation=Strict", ctypeMerge, appendLeasePatch(nil, "pico-1", uid, 40*time.Second, now.Add(10*time.Second), false))
	want(t, "lease renew", code, 200)
	code, _ = r.do("lease-renew-owner", r.node, "PATCH", leases+"/pico-1?fieldValidation=Strict", ctypeMerge, appendLeasePatch(nil, "pico-1", uid, 40*time.Second, now.Add(20*time.Second), true))
	want(t, "lease renew with owner", code, 200)

	// Pods bound to pico-1 by the admin (no scheduler here; no controller
	// manager either, so the admin makes the default ServiceAccount).
	code, _ = r.do("admin-sa", r.admin, "POST", "/api/v1/namespaces/default/serviceaccounts", ctypeJSON, []byte(`{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default"}}`))
	want(t, "admin service account", code, 201)
	code, _ = r.do("admin-pod-create", r.admin, "POST", "/api/v1/namespaces/default/pods", ctypeJSON, []byte(testPodJSON("blink-1", BlinkImage)))
	want(t, "admin pod create", code, 201)
	code, _ = r.do("pod-list", r.node, "GET", "/api/v1/pods?fieldSelector="+url.QueryEscape("spec.nodeName=pico-1"), "", nil)
	want(t, "pod list", code, 200)
	listRV := mustJSON(t, r.last("pod-list")).get("metadata", "resourceVersion").strOr("")
	code, _ = r.do("pod-list-all-forbidden", r.node, "GET", "/api/v1/pods", "", nil)
	want(t, "listing all pods", code, 403)

	// A watch from the list, while the pod is updated, deleted and removed.
	lines := make(chan []string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := r.startWatch(ctx, r.node, "/api/v1/pods?fieldSelector="+url.QueryEscape("spec.nodeName=pico-1")+"&watch=1&allowWatchBookmarks=true&timeoutSeconds=4&resourceVersion="+listRV)
	go func() { lines <- readLines(resp) }()
	code, pod := r.do("admin-pod-create-2", r.admin, "POST", "/api/v1/namespaces/default/pods", ctypeJSON, []byte(testPodJSON("sensor-1", SensorImage)))
	want(t, "admin pod create", code, 201)
	podUID := mustJSON(t, pod).get("metadata", "uid").strOr("")
	ps := testPodStatus()
	ps.uid = podUID
	ps.containers[0].name, ps.containers[0].image, ps.containers[0].imageID = "app", SensorImage, "picogate://"+SensorImage
	code, _ = r.do("pod-status-patch", r.node, "PATCH", "/api/v1/namespaces/default/pods/sensor-1/status?fieldValidation=Strict", ctypeSMP, appendPodStatusPatch(nil, ps))
	want(t, "pod status patch", code, 200)
	stale := *ps
	stale.uid = "00000000-0000-0000-0000-000000000000"
	code, _ = r.do("pod-status-wrong-uid", r.node, "PATCH", "/api/v1/namespaces/default/pods/sensor-1/status", ctypeSMP, appendPodStatusPatch(nil, &stale))
	want(t, "pod status patch with a stale uid", code, 422)
	code, _ = r.do("admin-pod-delete", r.admin, "DELETE", "/api/v1/namespaces/default/pods/sensor-1", "", nil)
	want(t, "admin graceful delete", code, 200)
	code, _ = r.do("pod-delete", r.node, "DELETE", "/api/v1/namespaces/default/pods/sensor-1", ctypeJSON, appendDeleteOptions(nil, podUID))
	want(t, "node completes the deletion", code, 200)
	code, _ = r.do("pod-get-missing", r.node, "GET", "/api/v1/namespaces/default/pods/sensor-1", "", nil)
	want(t, "get deleted pod (the Node authorizer knows no such pod bound to pico-1)", code, 403)
	r.write(filepath.Join(dir, "watch-pods.jsonl"), []byte(strings.Join(<-lines, "\n")+"\n"))

	// A watch from a resourceVersion etcd compacted away: a second API
	// server without a watch cache and with compaction every second.
	cp2 := controlplanetest.Start(t, controlplane.Config{APIServerArgs: []string{"--watch-cache=false", "--etcd-compaction-interval=1s"}})
	r2 := &recorder{t: t, base: cp2.URL(), sizes: map[string]recSize{}, admin: httpClient(t, cp2.AdminConfig())}
	r2.node = httpClient(t, func() *rest.Config { c := cp2.AdminConfig(); c.Impersonate = nodeCfg.Impersonate; return c }())
	code, _ = r2.do("admin-node-create", r2.node, "POST", "/api/v1/nodes", ctypeJSON, appendNodeCreate(nil, spec, st, now))
	want(t, "node create on the second API server", code, 201)
	code, _ = r2.do("admin-pod-list", r2.node, "GET", "/api/v1/pods?fieldSelector="+url.QueryEscape("spec.nodeName=pico-1"), "", nil)
	want(t, "pod list on the second API server", code, 200)
	oldRV := mustJSON(t, r2.last("admin-pod-list")).get("metadata", "resourceVersion").strOr("")
	for i := range 5 {
		code, _ = r2.do("admin-node-label", r2.admin, "PATCH", "/api/v1/nodes/pico-1", ctypeMerge, []byte(fmt.Sprintf(`{"metadata":{"labels":{"n":"%d"}}}`, i)))
		want(t, "admin label change", code, 200)
	}
	// etcd compacts every second here; until oldRV is compacted away the watch times out without events.
	var gone []string
	for deadline := time.Now().Add(20 * time.Second); ; {
		gone = readLines(r2.startWatch(ctx, r2.node, "/api/v1/pods?fieldSelector="+url.QueryEscape("spec.nodeName=pico-1")+"&watch=1&timeoutSeconds=1&resourceVersion="+oldRV))
		if strings.Contains(strings.Join(gone, "\n"), `"code":410`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch from compacted resourceVersion %s: got %q for 20s, want a 410 error event", oldRV, gone)
		}
	}
	r.write(filepath.Join(dir, "watch-gone.jsonl"), []byte(strings.Join(gone, "\n")+"\n"))

	// The reference firmware's ConfigMap: refused by the Node authorizer,
	// allowed by a Role bound to the group picogate:devices.
	code, _ = r.do("configmap-forbidden", r.node, "GET", "/api/v1/namespaces/default/configmaps/pico-config", "", nil)
	want(t, "configmap without a role", code, 403)
	for _, obj := range []string{
		`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"pico-config","namespace":"default"},"data":{"memory_values":"[12, 34, 56]"}}`,
	} {
		code, _ = r.do("admin-configmap", r.admin, "POST", "/api/v1/namespaces/default/configmaps", ctypeJSON, []byte(obj))
		want(t, "admin configmap", code, 201)
	}
	code, _ = r.do("admin-role", r.admin, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", ctypeJSON,
		[]byte(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"pico-config-read"},"rules":[{"apiGroups":[""],"resources":["configmaps"],"resourceNames":["pico-config"],"verbs":["get"]}]}`))
	want(t, "admin role", code, 201)
	code, _ = r.do("admin-rolebinding", r.admin, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", ctypeJSON,
		[]byte(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"pico-config-read"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"pico-config-read"},"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":"picogate:devices"}]}`))
	want(t, "admin rolebinding", code, 201)
	deadline := time.Now().Add(10 * time.Second)
	for code != 200 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		code, _ = r.do("configmap", r.node, "GET", "/api/v1/namespaces/default/configmaps/pico-config", "", nil)
	}
	want(t, "configmap with a role", code, 200)

	for name := range r.sizes {
		if strings.HasPrefix(name, "admin-") {
			delete(r.sizes, name)
		}
	}
	admin, _ := filepath.Glob(filepath.Join(dir, "admin-*.json"))
	for _, f := range admin {
		os.Remove(f)
	}
	keys := make([]string, 0, len(r.sizes))
	for k := range r.sizes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out bytes.Buffer
	out.WriteString("{\n")
	for i, k := range keys {
		b, _ := json.Marshal(r.sizes[k])
		sep := ","
		if i == len(keys)-1 {
			sep = ""
		}
		fmt.Fprintf(&out, "  %q: %s%s\n", k, b, sep)
	}
	out.WriteString("}\n")
	r.write(filepath.Join(dir, "sizes.json"), out.Bytes())
}

func testPodJSON(name, image string) string {
	return `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"` + name + `","namespace":"default","labels":{"app":"` + name + `"}},` +
		`"spec":{"nodeName":"pico-1","automountServiceAccountToken":false,"restartPolicy":"Always","tolerations":[{"key":"picogate.io/mcu","operator":"Exists","effect":"NoSchedule"}],` +
		`"containers":[{"name":"app","image":"` + image + `","args":["--period=2s"],"env":[{"name":"LED","value":"GP25"}]}]}}`
}

func httpClient(t *testing.T, cfg *rest.Config) *http.Client {
	c, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func want(t *testing.T, what string, got, want int) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got HTTP %d, want %d", what, got, want)
	}
}

func mustJSON(t *testing.T, b []byte) jval {
	t.Helper()
	v, err := parseJSON(b)
	if err != nil {
		t.Fatalf("response is not JSON: %v: %s", err, b)
	}
	return v
}

func (r *recorder) last(name string) []byte {
	b, err := os.ReadFile(filepath.Join("testdata", "api", name+".json"))
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

func (r *recorder) write(path string, b []byte) {
	if err := os.WriteFile(path, b, 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// do sends one request, saves the response body as NAME.json and its sizes.
func (r *recorder) do(name string, c *http.Client, method, path, ctype string, body []byte) (int, []byte) {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, r.base+path, rd)
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.Do(req)
	if err != nil {
		r.t.Fatalf("%s: %v", name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	r.write(filepath.Join("testdata", "api", name+".json"), b)
	r.mu.Lock()
	r.sizes[name] = recSize{Status: resp.StatusCode, BodyBytes: len(b), CompactBodyBytes: compactSize(b),
		HeaderBytes: headerSize(resp, false), CompactHeaderByte: headerSize(resp, true),
		Chunked: len(resp.TransferEncoding) > 0, RequestBodyBytes: len(body)}
	r.mu.Unlock()
	return resp.StatusCode, b
}

// startWatch opens a watch and returns once the API server has answered it (200 and headers): from then
// on the watch is registered. readLines collects its events.
func (r *recorder) startWatch(ctx context.Context, c *http.Client, path string) *http.Response {
	r.t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", r.base+path, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		r.t.Fatalf("watch %s: got %s, want 200", path, resp.Status)
	}
	return resp
}

// readLines reads a watch response to its end, one event per line, and closes it.
func readLines(resp *http.Response) []string {
	defer resp.Body.Close()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// compactSize estimates what the gateway sends: the body without
// metadata.managedFields (of the object, or of each list item).
func compactSize(b []byte) int {
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return len(b)
	}
	strip := func(o map[string]any) {
		if md, ok := o["metadata"].(map[string]any); ok {
			delete(md, "managedFields")
		}
	}
	strip(m)
	if items, ok := m["items"].([]any); ok {
		for _, it := range items {
			if o, ok := it.(map[string]any); ok {
				strip(o)
			}
		}
	}
	out, _ := json.Marshal(m)
	return len(out) + 1 // the API server ends bodies with a newline
}

// headerSize is the status line and headers as sent on the wire; compact
// drops Audit-Id and X-Kubernetes-Pf-* and counts a Content-Length instead
// of chunking.
func headerSize(resp *http.Response, compact bool) int {
	n := len("HTTP/1.1 200 OK\r\n") + 2
	for k, vs := range resp.Header {
		if compact && (k == "Audit-Id" || strings.HasPrefix(k, "X-Kubernetes-Pf-")) {
			continue
		}
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	if len(resp.TransferEncoding) > 0 {
		if compact {
			n += len("Content-Length: 0000\r\n")
		} else {
			n += len("Transfer-Encoding: chunked\r\n")
		}
	} else if resp.ContentLength >= 0 {
		n += len(fmt.Sprintf("Content-Length: %d\r\n", resp.ContentLength))
	}
	return n
}
