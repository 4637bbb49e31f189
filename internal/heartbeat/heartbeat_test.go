package heartbeat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/picogate/picogate/internal/asdevice"
	"github.com/picogate/picogate/internal/registry"
)

// fakeAPI is a tiny API server for one Node and its Lease: it applies status patches to the conditions
// (merged by type, as a strategic merge does) and keeps the Lease, and records every request.
type fakeAPI struct {
	mu       sync.Mutex
	conds    map[string]map[string]any
	rv       int
	lease    map[string]any // nil: no Lease
	reqs     []asdevice.Request
	as       []asdevice.Identity
	fail     error // returned for every request while set
	refuse   int   // answered with this code while set
	nodeGone bool
}

func newFakeAPI() *fakeAPI { return &fakeAPI{conds: map[string]map[string]any{}} }

func (f *fakeAPI) Do(_ context.Context, as asdevice.Identity, req asdevice.Request) (asdevice.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, req)
	f.as = append(f.as, as)
	if f.fail != nil {
		return asdevice.Response{}, f.fail
	}
	if f.refuse != 0 {
		return asdevice.Response{Code: f.refuse, Body: []byte(`{"kind":"Status","code":` + fmt.Sprint(f.refuse) + `}`)}, nil
	}
	switch {
	case strings.HasSuffix(req.Path, "/status"):
		if f.nodeGone {
			return asdevice.Response{Code: 404, Body: []byte(`{"kind":"Status","code":404}`)}, nil
		}
		var p struct {
			Status struct {
				Conditions []map[string]any `json:"conditions"`
			} `json:"status"`
		}
		if err := json.Unmarshal(req.Body, &p); err != nil {
			return asdevice.Response{Code: 400}, nil
		}
		for _, c := range p.Status.Conditions {
			typ := c["type"].(string)
			old := f.conds[typ]
			if old == nil {
				old = map[string]any{}
				f.conds[typ] = old
			}
			for k, v := range c {
				old[k] = v
			}
		}
		f.rv++
		return asdevice.Response{Code: 200, Body: f.nodeJSON()}, nil
	case req.Method == http.MethodPatch && strings.Contains(req.Path, "/leases/"):
		if f.lease == nil {
			return asdevice.Response{Code: 404, Body: []byte(`{"kind":"Status","code":404}`)}, nil
		}
		var p map[string]any
		_ = json.Unmarshal(req.Body, &p)
		for k, v := range p {
			f.lease[k] = v
		}
		f.rv++
		f.lease["metadata"] = map[string]any{"name": "pico-1", "resourceVersion": fmt.Sprint(f.rv)}
		b, _ := json.Marshal(f.lease)
		return asdevice.Response{Code: 200, Body: b}, nil
	case req.Method == http.MethodPost && strings.HasSuffix(req.Path, "/leases"):
		_ = json.Unmarshal(req.Body, &f.lease)
		return asdevice.Response{Code: 201, Body: req.Body}, nil
	}
	return asdevice.Response{Code: 404}, nil
}

func (f *fakeAPI) nodeJSON() []byte {
	var conds []map[string]any
	for _, typ := range []string{"Ready", "MemoryPressure"} {
		if c := f.conds[typ]; c != nil {
			conds = append(conds, c)
		}
	}
	b, _ := json.Marshal(map[string]any{"kind": "Node", "metadata": map[string]any{"name": "pico-1", "uid": "uid-1", "resourceVersion": fmt.Sprint(f.rv),
		"managedFields": []any{map[string]any{"manager": "x"}}}, "status": map[string]any{"conditions": conds}})
	return b
}

// calls returns and forgets the requests made so far, as "METHOD path".
func (f *fakeAPI) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.reqs {
		out = append(out, r.Method+" "+r.Path)
	}
	f.reqs = nil
	return out
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func dev(name string) *registry.Device {
	return &registry.Device{Name: name, User: []string{"system:node:" + name}, Groups: []string{"system:nodes", "picogate:devices"}}
}

var start = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

func heartbeatBody(ready, memory string, beat time.Time) string {
	ts := beat.UTC().Format(time.RFC3339)
	return `{"status":{"conditions":[{"type":"Ready","status":"` + ready + `","reason":"KubeletReady","lastHeartbeatTime":"` + ts + `","lastTransitionTime":"` + ts +
		`"},{"type":"MemoryPressure","status":"` + memory + `","reason":"KubeletHasSufficientMemory","lastHeartbeatTime":"` + ts + `","lastTransitionTime":"` + ts +
		`"}],"addresses":[{"type":"InternalIP","address":"192.168.1.50"}]}}`
}

func newTranslator(t *testing.T, api asdevice.Doer, clk *clock) *Translator {
	t.Helper()
	tr, err := New(Config{Upstream: api, GracePeriod: 40 * time.Second, ReportInterval: 5 * time.Minute, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// beat sends one heartbeat and returns the answer; it fails the test if the translator did not take it.
func beat(t *testing.T, tr *Translator, d *registry.Device, body string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest("PATCH", "/api/v1/nodes/"+d.Name+"/status", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/strategic-merge-patch+json")
	r.Header.Set("User-Agent", "k3s-pico-node/1.0")
	w := httptest.NewRecorder()
	if !tr.ServeStatusPatch(w, r, d, []byte(body)) {
		t.Fatal("ServeStatusPatch: got false for a heartbeat, want it translated")
	}
	return w
}

func wantCalls(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s: got upstream calls %q, want %q", what, got, want)
	}
}

const (
	statusPath  = "PATCH /api/v1/nodes/pico-1/status"
	leasePatch1 = "PATCH /apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/pico-1"
	leasePost   = "POST /apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
)

func TestHeartbeatSequence(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: start}
	tr := newTranslator(t, api, clk) // grace 40s: renew every 10s, stale after 30s
	d := dev("pico-1")
	deviceClock := time.Date(1970, 1, 1, 0, 0, 10, 0, time.UTC) // a board that has not set its clock

	w := beat(t, tr, d, heartbeatBody("True", "False", deviceClock))
	wantCalls(t, "first heartbeat", api.calls(), statusPath, leasePatch1, leasePost)
	if w.Code != 200 || w.Header().Get(HeaderOutcome) != Written {
		t.Errorf("first heartbeat: got %d %q, want 200 %q", w.Code, w.Header().Get(HeaderOutcome), Written)
	}
	if got := api.conds["Ready"]["lastHeartbeatTime"]; got != start.Format(time.RFC3339) {
		t.Errorf("lastHeartbeatTime upstream: got %v, want the gateway's clock %s", got, start.Format(time.RFC3339))
	}
	if got := api.conds["Ready"]["lastTransitionTime"]; got != start.Format(time.RFC3339) {
		t.Errorf("lastTransitionTime upstream: got %v, want the gateway's clock (the device's 1970 is not a time)", got)
	}
	owner, _ := json.Marshal(api.lease["metadata"])
	if !strings.Contains(string(owner), `"ownerReferences":[{"apiVersion":"v1","kind":"Node","name":"pico-1","uid":"uid-1"}]`) {
		t.Errorf("created Lease metadata: got %s, want an ownerReference to Node pico-1 uid-1", owner)
	}
	var node map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &node); err != nil || !strings.Contains(w.Body.String(), `"uid":"uid-1"`) || strings.Contains(w.Body.String(), "managedFields") {
		t.Errorf("answer: got %s (%v), want a small Node with the uid", w.Body.String(), err)
	}

	steps := []struct {
		name    string
		advance time.Duration
		body    string
		outcome string
		calls   []string
	}{
		{"within the renew interval", 5 * time.Second, heartbeatBody("True", "False", deviceClock), Coalesced, nil},
		{"renew interval passed", 5 * time.Second, heartbeatBody("True", "False", deviceClock.Add(time.Hour)), Renewed, []string{leasePatch1}},
		{"only the device's timestamps changed", 5 * time.Second, heartbeatBody("True", "False", start), Coalesced, nil},
		{"a condition changed", time.Second, heartbeatBody("True", "True", start), Written, []string{statusPath}},
		{"same again", 9 * time.Second, heartbeatBody("True", "True", start), Renewed, []string{leasePatch1}},
	}
	for _, s := range steps {
		clk.add(s.advance)
		w := beat(t, tr, d, s.body)
		if got := w.Header().Get(HeaderOutcome); w.Code != 200 || got != s.outcome {
			t.Errorf("%s: got %d %q, want 200 %q", s.name, w.Code, got, s.outcome)
		}
		wantCalls(t, s.name, api.calls(), s.calls...)
	}
	// Heartbeats every 10 s for 5 minutes: one status write when the report interval (jittered up to
	// 10% early) has passed since the last write, Lease renewals otherwise.
	outcomes := map[string]int{}
	for range 30 {
		clk.add(10 * time.Second)
		outcomes[beat(t, tr, d, heartbeatBody("True", "True", start)).Header().Get(HeaderOutcome)]++
	}
	if outcomes[Written] != 1 || outcomes[Renewed] != 29 {
		t.Errorf("5 minutes of unchanged heartbeats: got %v, want 1 written (the report interval) and 29 renewed", outcomes)
	}
	// The changed condition got the gateway's clock as its transition time; the unchanged one kept its own.
	if got := api.conds["MemoryPressure"]["lastTransitionTime"]; got != start.Add(16*time.Second).Format(time.RFC3339) {
		t.Errorf("MemoryPressure lastTransitionTime: got %v, want the time of the change", got)
	}
	if got := api.conds["Ready"]["lastTransitionTime"]; got != start.Format(time.RFC3339) {
		t.Errorf("Ready lastTransitionTime: got %v, want unchanged since the first write", got)
	}
	for i, as := range api.as {
		if strings.Join(as.User, ",") != "system:node:pico-1" || strings.Join(as.Groups, ",") != "system:nodes,picogate:devices" {
			t.Errorf("upstream request %d: made as %v %v, want the device", i, as.User, as.Groups)
		}
	}
}

func TestHeartbeatWritesWhenTheControllerMayHaveMissedOne(t *testing.T) {
	cases := []struct {
		name  string
		fault func(api *fakeAPI, clk *clock, tr *Translator, d *registry.Device)
		code  int // answer to the heartbeat during the fault; 0: none sent
	}{
		{"a gap longer than grace minus the renew interval", func(api *fakeAPI, clk *clock, _ *Translator, _ *registry.Device) {
			clk.add(31 * time.Second)
		}, 0},
		{"the API server unreachable", func(api *fakeAPI, clk *clock, tr *Translator, d *registry.Device) {
			api.fail = errors.New("connection refused")
			clk.add(10 * time.Second)
		}, http.StatusServiceUnavailable},
		{"a refused renewal", func(api *fakeAPI, clk *clock, tr *Translator, d *registry.Device) {
			api.refuse = http.StatusTooManyRequests
			clk.add(10 * time.Second)
		}, http.StatusTooManyRequests},
		{"the gateway's credential refused", func(api *fakeAPI, clk *clock, tr *Translator, d *registry.Device) {
			api.refuse = http.StatusUnauthorized
			clk.add(10 * time.Second)
		}, http.StatusServiceUnavailable},
		{"the device re-created its Node", func(api *fakeAPI, clk *clock, tr *Translator, d *registry.Device) {
			r := httptest.NewRequest("POST", "/api/v1/nodes", nil)
			if tr.ServeStatusPatch(httptest.NewRecorder(), r, d, nil) {
				panic("a node POST was taken")
			}
			clk.add(time.Second)
		}, 0},
		{"forgotten (revoked, rotated)", func(api *fakeAPI, clk *clock, tr *Translator, d *registry.Device) {
			tr.Forget(d.Name)
			clk.add(time.Second)
		}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			api, clk := newFakeAPI(), &clock{t: start}
			tr := newTranslator(t, api, clk)
			d := dev("pico-1")
			beat(t, tr, d, heartbeatBody("True", "False", start))
			api.calls()
			c.fault(api, clk, tr, d)
			if c.code != 0 {
				w := beat(t, tr, d, heartbeatBody("True", "False", start))
				if w.Code != c.code {
					t.Errorf("during the fault: got %d, want %d", w.Code, c.code)
				}
				if c.code == 503 && w.Header().Get("Retry-After") == "" {
					t.Error("503 without Retry-After")
				}
				api.fail, api.refuse = nil, 0
				api.calls()
			}
			w := beat(t, tr, d, heartbeatBody("True", "False", start))
			if got := w.Header().Get(HeaderOutcome); got != Written {
				t.Errorf("next heartbeat: got %q (calls %q), want %q", got, api.calls(), Written)
			}
		})
	}
}

func TestHeartbeatWritesWhileUpstreamDiffersFromTheDevice(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: start}
	tr := newTranslator(t, api, clk)
	d := dev("pico-1")
	beat(t, tr, d, heartbeatBody("True", "False", start))
	// An answer shows the Node not Ready=True (someone else wrote it): the next heartbeat writes.
	api.conds["Ready"]["status"] = "Unknown"
	clk.add(time.Minute - 35*time.Second) // past a renewal, not stale
	beat(t, tr, d, heartbeatBody("False", "False", start))
	api.calls()
	clk.add(time.Second)
	// The device says False and upstream is False: nothing to write.
	if got := beat(t, tr, d, heartbeatBody("False", "False", start)).Header().Get(HeaderOutcome); got != Coalesced {
		t.Errorf("device and upstream both Ready=False: got %q, want %q", got, Coalesced)
	}
	if got := beat(t, tr, d, heartbeatBody("True", "False", start)).Header().Get(HeaderOutcome); got != Written {
		t.Errorf("device Ready=True, upstream False: got %q, want %q", got, Written)
	}
}

func TestNotAHeartbeatIsForwarded(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: start}
	tr := newTranslator(t, api, clk)
	d := dev("pico-1")
	hb := heartbeatBody("True", "False", start)
	cases := []struct {
		name, method, target, ctype, body string
	}{
		{"merge patch", "PATCH", "/api/v1/nodes/pico-1/status", "application/merge-patch+json", hb},
		{"json patch", "PATCH", "/api/v1/nodes/pico-1/status", "application/json-patch+json", `[]`},
		{"PUT", "PUT", "/api/v1/nodes/pico-1/status", "application/json", hb},
		{"with a query", "PATCH", "/api/v1/nodes/pico-1/status?dryRun=All", "application/strategic-merge-patch+json", hb},
		{"another node", "PATCH", "/api/v1/nodes/pico-2/status", "application/strategic-merge-patch+json", hb},
		{"the node, not its status", "PATCH", "/api/v1/nodes/pico-1", "application/strategic-merge-patch+json", hb},
		{"more than status", "PATCH", "/api/v1/nodes/pico-1/status", "application/strategic-merge-patch+json", `{"metadata":{"labels":{"a":"b"}},"status":{"conditions":[{"type":"Ready","status":"True"}]}}`},
		{"no conditions", "PATCH", "/api/v1/nodes/pico-1/status", "application/strategic-merge-patch+json", `{"status":{"addresses":[]}}`},
		{"a condition without a type", "PATCH", "/api/v1/nodes/pico-1/status", "application/strategic-merge-patch+json", `{"status":{"conditions":[{"status":"True"}]}}`},
		{"not JSON", "PATCH", "/api/v1/nodes/pico-1/status", "application/strategic-merge-patch+json", `{"status":`},
		{"two documents", "PATCH", "/api/v1/nodes/pico-1/status", "application/strategic-merge-patch+json", hb + hb},
		{"a GET", "GET", "/api/v1/nodes/pico-1/status", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(c.method, c.target, strings.NewReader(c.body))
			r.Header.Set("Content-Type", c.ctype)
			w := httptest.NewRecorder()
			if tr.ServeStatusPatch(w, r, d, []byte(c.body)) {
				t.Fatal("got true, want the request forwarded")
			}
			if w.Code != 200 || w.Body.Len() != 0 || len(w.Header()) != 0 {
				t.Errorf("got an answer written (%d %q), want nothing", w.Code, w.Body.String())
			}
		})
	}
	if tr.ServeStatusPatch(httptest.NewRecorder(), httptest.NewRequest("PATCH", "/api/v1/nodes/pico-1/status", strings.NewReader(hb)), nil, []byte(hb)) {
		t.Error("shared identity (no device): got true, want forwarded")
	}
	wantCalls(t, "requests not translated", api.calls())
}

func TestADeviceThatKeepsItsOwnLeaseIsLeftAlone(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: start}
	tr := newTranslator(t, api, clk)
	d := dev("pico-1")
	lease := httptest.NewRequest("PATCH", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/pico-1", strings.NewReader("{}"))
	if tr.ServeStatusPatch(httptest.NewRecorder(), lease, d, []byte("{}")) {
		t.Fatal("the device's Lease write was taken, want it forwarded")
	}
	hb := heartbeatBody("True", "False", start)
	r := httptest.NewRequest("PATCH", "/api/v1/nodes/pico-1/status", strings.NewReader(hb))
	r.Header.Set("Content-Type", "application/strategic-merge-patch+json")
	if tr.ServeStatusPatch(httptest.NewRecorder(), r, d, []byte(hb)) {
		t.Error("status patch of a device that renews its own Lease: got translated, want forwarded")
	}
	clk.add(41 * time.Second) // a grace period without a Lease write of its own
	beat(t, tr, d, hb)
}

func TestAnswerFitsTheFirmwareRing(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: start}
	tr := newTranslator(t, api, clk)
	name := strings.Repeat("p", 63)
	d := dev(name)
	w := beat(t, tr, d, heartbeatBody("True", "False", start))
	// The status line and the headers net/http adds (Date, Content-Type, Content-Length, the outcome).
	headers := len("HTTP/1.1 200 OK\r\nDate: Thu, 03 Dec 2026 10:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 0000\r\nPicogate-Heartbeat: coalesced\r\nConnection: close\r\n\r\n")
	if n := headers + w.Body.Len(); n > 2047 {
		t.Errorf("answer: %d bytes with headers, want at most 2047", n)
	}
}

func TestNewReportsEveryProblem(t *testing.T) {
	_, err := New(Config{GracePeriod: 2 * time.Second, RenewInterval: 10 * time.Second, ReportInterval: time.Second, LeaseDuration: -1})
	for _, want := range []string{"upstream", "grace period 2s is below 4s", "renew interval", "report interval", "lease duration"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want an error naming %q", err, want)
		}
	}
	tr, err := New(Config{Upstream: newFakeAPI()})
	if err != nil || tr.RenewInterval() != DefaultGracePeriod/4 {
		t.Errorf("defaults: got %v, %v, want renewals every %v", tr, err, DefaultGracePeriod/4)
	}
}

func TestOutcomesAreCounted(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: start}
	tr := newTranslator(t, api, clk)
	d := dev("pico-1")
	beat(t, tr, d, heartbeatBody("True", "False", start))
	beat(t, tr, d, heartbeatBody("True", "False", start))
	clk.add(10 * time.Second)
	beat(t, tr, d, heartbeatBody("True", "False", start))
	api.fail = errors.New("connection refused")
	clk.add(10 * time.Second)
	beat(t, tr, d, heartbeatBody("True", "False", start))
	for outcome, want := range map[string]float64{Written: 1, Coalesced: 1, Renewed: 1, failed: 1} {
		if got := counterValue(tr.outcomes.WithLabelValues(outcome)); got != want {
			t.Errorf("picogate_heartbeats_total{outcome=%q}: got %v, want %v", outcome, got, want)
		}
	}
	if len(tr.Collectors()) == 0 {
		t.Error("no collectors")
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func TestRetryAfterIsSpread(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 200 {
		d := RetryAfter()
		if d < 3*time.Second || d > 7*time.Second || d%time.Second != 0 {
			t.Fatalf("got %v, want whole seconds from 3s to 7s", d)
		}
		seen[d] = true
	}
	if len(seen) < 4 {
		t.Errorf("got %d distinct values in 200, want them spread over 3s to 7s", len(seen))
	}
}

func TestHeartbeating(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: start}
	tr := newTranslator(t, api, clk) // grace 40s
	d, agent := dev("pico-1"), dev("agent-1")
	req := func(method, path string) *http.Request { return httptest.NewRequest(method, path, nil) }
	status, lease := req("PATCH", "/api/v1/nodes/pico-1/status"), req("PATCH", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/agent-1")
	if tr.Heartbeating(status, d) {
		t.Error("a board never heard from: got true, want false (a boot is not a heartbeat of a Ready board)")
	}
	beat(t, tr, d, heartbeatBody("True", "False", start))
	tr.ServeStatusPatch(httptest.NewRecorder(), lease, agent, nil)
	cases := []struct {
		name string
		r    *http.Request
		d    *registry.Device
		want bool
	}{
		{"the status PATCH of a board whose heartbeat was accepted", status, d, true},
		{"the Lease write of a device that keeps its own", lease, agent, true},
		{"a GET", req("GET", "/api/v1/nodes/pico-1/status"), d, false},
		{"a boot", req("POST", "/api/v1/nodes"), d, false},
		{"another node's status", req("PATCH", "/api/v1/nodes/pico-2/status"), d, false},
		{"the shared identity", status, nil, false},
	}
	for _, c := range cases {
		if got := tr.Heartbeating(c.r, c.d); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
	clk.add(41 * time.Second)
	if tr.Heartbeating(status, d) || tr.Heartbeating(lease, agent) {
		t.Error("a grace period after the last accepted heartbeat: got true, want false")
	}
}
