package podwatch

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/picogate/picogate/internal/asdevice"
	"github.com/picogate/picogate/internal/registry"
)

// fakeAPI is the API server as the hub sees it: a pod list and watch streams the test writes events to,
// and the answers to probes made as a device.
type fakeAPI struct {
	mu      sync.Mutex
	rv      uint64
	items   []string // the list's items, as the API server lists them (no kind)
	listErr error
	watches chan *io.PipeWriter
	probes  atomic.Int64 // as a device
	revs    atomic.Int64 // revision lists (limit=1) as the gateway
	refuse  atomic.Bool  // probes get 403
}

func newFakeAPI(rv uint64, items ...string) *fakeAPI {
	return &fakeAPI{rv: rv, items: items, watches: make(chan *io.PipeWriter, 16)}
}

func (f *fakeAPI) source(ctx context.Context, q url.Values) (io.ReadCloser, error) {
	if q.Get("fieldSelector") != "spec.nodeName!=" {
		return nil, fmt.Errorf("selector %q, want spec.nodeName!=", q.Get("fieldSelector"))
	}
	if q.Get("watch") == "1" {
		pr, pw := io.Pipe()
		context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
		f.watches <- pw
		return pr, nil
	}
	if q.Get("limit") == "1" {
		f.revs.Add(1)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	body := `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"` + strconv.FormatUint(f.rv, 10) + `"},"items":[` + strings.Join(f.items, ",") + `]}`
	return io.NopCloser(strings.NewReader(body)), nil
}

func (f *fakeAPI) Do(_ context.Context, as asdevice.Identity, req asdevice.Request) (asdevice.Response, error) {
	f.probes.Add(1)
	name := strings.TrimPrefix(as.User[0], "system:node:")
	if f.refuse.Load() || !strings.Contains(req.Path, url.QueryEscape("spec.nodeName="+name)+"&limit=1&resourceVersion=0") {
		return asdevice.Response{Code: http.StatusForbidden, Body: []byte(`{"kind":"Status","code":403}`)}, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return asdevice.Response{Code: 200, Body: []byte(`{"kind":"PodList","metadata":{"resourceVersion":"` + strconv.FormatUint(f.rv, 10) + `"},"items":[]}`)}, nil
}

// pod is a pod's JSON as the API server sends it in a list (item) or an event (with kind).
func pod(name, node string, rv uint64, phase string, withKind bool) string {
	kind := ""
	if withKind {
		kind = `"kind":"Pod","apiVersion":"v1",`
	}
	return `{` + kind + `"metadata":{"name":"` + name + `","namespace":"default","resourceVersion":"` + strconv.FormatUint(rv, 10) +
		`","managedFields":[{"manager":"kubectl"}]},"spec":{"nodeName":"` + node + `"},"status":{"phase":"` + phase + `"}}`
}

// send writes one event to the shared watch and moves the fake's revision.
func (f *fakeAPI) send(t *testing.T, w *io.PipeWriter, typ, name, node string, rv uint64, phase string) {
	t.Helper()
	f.mu.Lock()
	f.rv = max(f.rv, rv)
	f.mu.Unlock()
	if _, err := fmt.Fprintf(w, `{"type":%q,"object":%s}`+"\n", typ, pod(name, node, rv, phase, true)); err != nil {
		t.Fatal(err)
	}
}

func device(name string) *registry.Device {
	return &registry.Device{Name: name, User: []string{"system:node:" + name}, Groups: []string{"system:nodes", "picogate:devices"}}
}

// startHub runs a hub over api until the test ends, and returns it with the shared watch's stream once
// it is synced.
func startHub(t *testing.T, api *fakeAPI, cfg Config) (*Hub, *io.PipeWriter) {
	t.Helper()
	cfg.Source, cfg.AsDevice = api.source, api
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	var w *io.PipeWriter
	select {
	case w = <-api.watches:
	case <-time.After(5 * time.Second):
		t.Fatal("the hub did not watch within 5s")
	}
	if !h.Ready() {
		t.Fatal("watching but not ready")
	}
	return h, w
}

// served is a device's watch through a server whose only answer is the hub: 599 when it is not served.
type served struct {
	code   int
	events chan string
	cancel context.CancelFunc // the device goes away
	done   chan struct{}      // closed when the hub's handler has returned
}

func serveOne(t *testing.T, h *Hub, d *registry.Device, query string, header ...string) *served {
	t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		if !h.ServeWatch(w, r, d, nil) {
			w.WriteHeader(599)
		}
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/v1/pods?"+query, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	s := &served{code: res.StatusCode, events: make(chan string, 64), cancel: cancel, done: done}
	go func() {
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			s.events <- sc.Text()
		}
		close(s.events)
	}()
	return s
}

// next is the watch's next event as "TYPE name rv phase" (a bookmark: "BOOKMARK rv", an error: "ERROR
// code reason"), or "END" when the stream ended.
func (s *served) next(t *testing.T) string {
	t.Helper()
	select {
	case line, ok := <-s.events:
		if !ok {
			return "END"
		}
		var ev struct {
			Type   string
			Object struct {
				Code     int
				Reason   string
				Metadata struct {
					Name, ResourceVersion string
					ManagedFields         []any
				}
				Status json.RawMessage
			}
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("event %q: %v", line, err)
		}
		switch ev.Type {
		case "BOOKMARK":
			return "BOOKMARK " + ev.Object.Metadata.ResourceVersion
		case "ERROR":
			return fmt.Sprintf("ERROR %d %s", ev.Object.Code, ev.Object.Reason)
		}
		if ev.Object.Metadata.ManagedFields != nil || !strings.Contains(line, `"kind":"Pod","apiVersion":"v1"`) {
			t.Errorf("event %q: want the pod with its kind and without managedFields", line)
		}
		var st struct{ Phase string }
		_ = json.Unmarshal(ev.Object.Status, &st)
		return strings.Join([]string{ev.Type, ev.Object.Metadata.Name, ev.Object.Metadata.ResourceVersion, st.Phase}, " ")
	case <-time.After(5 * time.Second):
		return "TIMEOUT"
	}
}

func (s *served) want(t *testing.T, events ...string) {
	t.Helper()
	for _, want := range events {
		if got := s.next(t); got != want {
			t.Fatalf("got event %q, want %q", got, want)
		}
	}
}

const watchA = "fieldSelector=spec.nodeName%3Da&watch=1"

// TestServesOwnNodeOnly: a device's watch gets its own node's pods and nothing of another node's, from
// "0" (synthetic ADDED of what is there) and on through ADDED, MODIFIED and DELETED.
func TestServesOwnNodeOnly(t *testing.T) {
	api := newFakeAPI(10, pod("a1", "a", 5, "Pending", false), pod("b1", "b", 6, "Pending", false))
	h, up := startHub(t, api, Config{})
	s := serveOne(t, h, device("a"), watchA+"&resourceVersion=0")
	if s.code != 200 {
		t.Fatalf("got %d, want 200 (served)", s.code)
	}
	s.want(t, "ADDED a1 5 Pending")
	api.send(t, up, "ADDED", "b2", "b", 11, "Pending")
	api.send(t, up, "MODIFIED", "b1", "b", 12, "Running")
	api.send(t, up, "ADDED", "a2", "a", 13, "Pending")
	api.send(t, up, "MODIFIED", "a1", "a", 14, "Running")
	api.send(t, up, "DELETED", "a2", "a", 15, "Pending")
	s.want(t, "ADDED a2 13 Pending", "MODIFIED a1 14 Running", "DELETED a2 15 Pending")
	if got := h.served.Load(); got != 1 {
		t.Errorf("served watches: got %d, want 1", got)
	}
}

// TestResumeAndGone: a watch from a resourceVersion gets every event of its node after it, in order; one
// from before the history the hub holds for its node gets the API server's 410 Expired.
func TestResumeAndGone(t *testing.T) {
	api := newFakeAPI(10)
	h, up := startHub(t, api, Config{MaxEvents: 4})
	api.send(t, up, "ADDED", "a1", "a", 11, "Pending")
	api.send(t, up, "MODIFIED", "a1", "a", 12, "Running")
	api.send(t, up, "ADDED", "b1", "b", 13, "Pending")
	api.send(t, up, "MODIFIED", "a1", "a", 14, "Succeeded")
	waitRV(t, h, 14)
	h.Observe(httptest.NewRequest("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Da", nil), device("a"))(200)
	s := serveOne(t, h, device("a"), watchA+"&resourceVersion=11")
	s.want(t, "MODIFIED a1 12 Running", "MODIFIED a1 14 Succeeded")
	for _, rv := range []uint64{15, 16, 17, 18} { // push a1's 11 and 12 out of the 4-event history
		api.send(t, up, "MODIFIED", "b1", "b", rv, "Running")
	}
	waitRV(t, h, 18)
	if g := serveOne(t, h, device("a"), watchA+"&resourceVersion=11"); g.code != 200 || g.next(t) != "ERROR 410 Expired" || g.next(t) != "END" {
		t.Error("a watch from before the history: want 200, one ERROR 410 Expired event, the end")
	}
	r := serveOne(t, h, device("a"), watchA+"&resourceVersion=14")
	api.send(t, up, "DELETED", "a1", "a", 19, "Succeeded")
	r.want(t, "DELETED a1 19 Succeeded")
	if g := serveOne(t, h, device("a"), watchA+"&resourceVersion=9"); g.next(t) != "ERROR 410 Expired" {
		t.Error("a watch from before the hub's list: want 410")
	}
}

func waitRV(t *testing.T, h *Hub, rv uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		got, fresh := h.rv, h.fresh
		h.mu.Unlock()
		if got >= rv {
			return
		}
		select {
		case <-fresh:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("the hub is at %d, want %d", got, rv)
		}
	}
}

// TestRelayed: what the hub cannot serve exactly, or the API server did not allow, is left to the
// gateway to relay, with nothing written.
func TestRelayed(t *testing.T) {
	api := newFakeAPI(10, pod("a1", "a", 5, "Pending", false))
	h, _ := startHub(t, api, Config{})
	cases := []struct {
		name, query string
		header      []string
		refuse      bool
	}{
		{"another node's pods", "fieldSelector=spec.nodeName%3Db&watch=1&resourceVersion=0", nil, false},
		{"no selector", "watch=1&resourceVersion=0", nil, false},
		{"a label selector too", watchA + "&labelSelector=app%3Dx&resourceVersion=0", nil, false},
		{"not a watch", "fieldSelector=spec.nodeName%3Da", nil, false},
		{"protobuf", watchA + "&resourceVersion=0", []string{"Accept", "application/vnd.kubernetes.protobuf;stream=watch"}, false},
		{"a table", watchA + "&resourceVersion=0", []string{"Accept", "application/json;as=Table;g=meta.k8s.io;v=v1"}, false},
		{"a resourceVersion that is not a revision", watchA + "&resourceVersion=x1", nil, false},
		{"newer than the API server's", watchA + "&resourceVersion=99", nil, false},
		{"the API server refuses the device", watchA + "&resourceVersion=0", nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			api.refuse.Store(c.refuse)
			h.Forget("a", true)
			if s := serveOne(t, h, device("a"), c.query, c.header...); s.code != 599 {
				t.Errorf("got %d, want it relayed", s.code)
			}
		})
	}
	api.refuse.Store(false)
	notReady, err := New(Config{Source: api.source, AsDevice: api})
	if err != nil {
		t.Fatal(err)
	}
	if s := serveOne(t, notReady, device("a"), watchA+"&resourceVersion=0"); s.code != 599 {
		t.Errorf("a hub not synced: got %d, want it relayed", s.code)
	}
}

// TestAuthorization: a device is served only within the window the API server's 200 to its own list
// (Observe) or to a probe as the device opened; a refusal, or Forget, closes it at once.
func TestAuthorization(t *testing.T) {
	api := newFakeAPI(10)
	now := time.Now()
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	h, _ := startHub(t, api, Config{AuthzWindow: time.Minute, Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	list := httptest.NewRequest("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Da", nil)
	served := func() bool {
		return serveOne(t, h, device("a"), watchA+"&resourceVersion=10&timeoutSeconds=1").code == 200
	}
	steps := []struct {
		name   string
		before func()
		probes int64
	}{
		{"no window: a probe", func() {}, 1},
		{"within the probe's window: none", func() {}, 0},
		{"the window passed: a probe", func() { clock.Add(int64(2 * time.Minute)) }, 1},
		{"forgotten (revoked): a probe", func() { h.Forget("a", true) }, 1},
		{"the device's own list answered 403: a probe", func() { h.Observe(list, device("a"))(403) }, 1},
		{"the device's own list answered 200: none", func() { clock.Add(int64(2 * time.Minute)); h.Observe(list, device("a"))(200) }, 0},
		{"another node's list answered 200 grants nothing", func() {
			h.Forget("a", true)
			if h.Observe(httptest.NewRequest("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Db", nil), device("a")) != nil {
				t.Error("a device's list of another node's pods: Observe wants its answer, want nil")
			}
		}, 1},
	}
	for _, s := range steps {
		s.before()
		before := api.probes.Load()
		if !served() {
			t.Errorf("%s: not served", s.name)
		}
		if got := api.probes.Load() - before; got != s.probes {
			t.Errorf("%s: got %d probes, want %d", s.name, got, s.probes)
		}
	}
}

// TestBookmarksAndTimeout: bookmarks carry the newest resourceVersion the shared watch has seen, and
// the stream ends cleanly at timeoutSeconds.
func TestBookmarksAndTimeout(t *testing.T) {
	api := newFakeAPI(10)
	h, up := startHub(t, api, Config{BookmarkEvery: 200 * time.Millisecond})
	api.send(t, up, "ADDED", "b1", "b", 20, "Pending")
	waitRV(t, h, 20)
	start := time.Now()
	s := serveOne(t, h, device("a"), watchA+"&resourceVersion=10&allowWatchBookmarks=true&timeoutSeconds=1")
	s.want(t, "BOOKMARK 20")
	api.send(t, up, "MODIFIED", "b1", "b", 21, "Running")
	if got := s.next(t); got != "BOOKMARK 21" && got != "BOOKMARK 20" {
		t.Fatalf("got %q, want a bookmark", got)
	}
	for {
		if got := s.next(t); got == "END" {
			break
		} else if !strings.HasPrefix(got, "BOOKMARK") {
			t.Fatalf("got %q, want bookmarks, then the end", got)
		}
	}
	if d := time.Since(start); d < time.Second || d > 5*time.Second {
		t.Errorf("the watch ended after %v, want about 1s", d)
	}
	q := serveOne(t, h, device("a"), watchA+"&resourceVersion=10&timeoutSeconds=1")
	if got := q.next(t); got != "END" {
		t.Errorf("without allowWatchBookmarks: got %q, want nothing, then the end", got)
	}
}

// TestRelistEndsServedWatches: when the shared watch expires and the reflector lists again, every
// served watch ends, and a watch from before the new list gets 410.
func TestRelistEndsServedWatches(t *testing.T) {
	api := newFakeAPI(10)
	h, up := startHub(t, api, Config{})
	s := serveOne(t, h, device("a"), watchA+"&resourceVersion=10")
	api.mu.Lock()
	api.rv = 50
	api.mu.Unlock()
	fmt.Fprintf(up, `{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Expired","code":410,"message":"too old"}}`+"\n")
	if got := s.next(t); got != "END" {
		t.Fatalf("after the relist: got %q, want the end", got)
	}
	select {
	case <-api.watches:
	case <-time.After(5 * time.Second):
		t.Fatal("no watch after the relist")
	}
	if got := serveOne(t, h, device("a"), watchA+"&resourceVersion=10").next(t); got != "ERROR 410 Expired" {
		t.Errorf("a watch from before the relist: got %q, want 410", got)
	}
}

// TestBrokenEndsServedWatches: a shared watch that stays broken longer than MaxDown ends the served
// watches with an ERROR 503 event, and new ones are relayed; a forbidden list leaves the hub unready.
func TestBrokenEndsServedWatches(t *testing.T) {
	api := newFakeAPI(10)
	h, up := startHub(t, api, Config{MaxDown: 200 * time.Millisecond})
	s := serveOne(t, h, device("a"), watchA+"&resourceVersion=10")
	api.mu.Lock()
	api.listErr = apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", fmt.Errorf("no RBAC"))
	api.mu.Unlock()
	_, _ = io.WriteString(up, "{not json\n")
	if got := s.next(t); got != "ERROR 503 ServiceUnavailable" {
		t.Fatalf("got %q, want ERROR 503", got)
	}
	if got := s.next(t); got != "END" {
		t.Fatalf("got %q, want the end", got)
	}
	if r := serveOne(t, h, device("a"), watchA+"&resourceVersion=10"); r.code != 599 {
		t.Errorf("while broken: got %d, want relayed", r.code)
	}
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{MaxEvents: -1, AuthzWindow: 2 * time.Hour, MaxTimeout: time.Millisecond})
	if err == nil {
		t.Fatal("got no error")
	}
	for _, want := range []string{"source", "as the device", "max events", "authorization window", "max timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q: want it to name %q", err, want)
		}
	}
}

// TestDeviceGoneEndsWatch: a served watch ends with its request (the device went away, or the gateway
// ended it on a credential change), and leaves nothing behind in the hub.
func TestDeviceGoneEndsWatch(t *testing.T) {
	api := newFakeAPI(10)
	h, _ := startHub(t, api, Config{})
	watches := []*served{serveOne(t, h, device("a"), watchA+"&resourceVersion=10"), serveOne(t, h, device("a"), watchA+"&resourceVersion=0")}
	for _, s := range watches {
		s.cancel()
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			t.Fatal("the served watch went on 5s after its device went away")
		}
	}
	h.mu.Lock()
	left := len(h.nodes["a"].watchers)
	h.mu.Unlock()
	if got := h.served.Load(); got != 0 || left != 0 {
		t.Errorf("after the devices went away: %d served, %d watchers held; want 0 and 0", got, left)
	}
}

// TestRevisionRounds: watches from a resourceVersion newer than the shared watch has seen (a device's
// fresh list in a quiet cluster) are served once the API server's current revision covers it, asked for
// in rounds that many watches share; one newer than the API server's is relayed.
func TestRevisionRounds(t *testing.T) {
	api := newFakeAPI(10)
	h, _ := startHub(t, api, Config{})
	api.mu.Lock()
	api.rv = 40 // the cluster moved on; no pod changed
	api.mu.Unlock()
	h.Observe(httptest.NewRequest("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Da", nil), device("a"))(200)
	const n = 20
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { codes <- serveOne(t, h, device("a"), watchA+"&resourceVersion=35&timeoutSeconds=1").code })
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("a watch from 35 with the API server at 40: got %d, want 200 (served)", c)
		}
	}
	t.Logf("%d watches, %d revision lists", n, api.revs.Load())
	if got := api.revs.Load(); got < 1 || got > n/2 {
		t.Errorf("revision lists for %d watches: got %d, want a few shared rounds", n, got)
	}
	if got := api.probes.Load(); got != 0 {
		t.Errorf("device probes within the window of the device's own list: got %d, want 0", got)
	}
	if s := serveOne(t, h, device("a"), watchA+"&resourceVersion=41"); s.code != 599 {
		t.Errorf("a watch from 41 with the API server at 40: got %d, want it relayed", s.code)
	}
}
