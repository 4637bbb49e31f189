package gateway

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/picogate/picogate/internal/registry"
)

func TestAnswer(t *testing.T) {
	d := dev("pico-1", registry.AuthToken)
	var seen []string
	takeStatus := func(w http.ResponseWriter, r *http.Request, dv *registry.Device, body []byte) bool {
		seen = append(seen, "status "+dv.Name+" "+string(body))
		if !strings.HasSuffix(r.URL.Path, "/status") {
			return false
		}
		w.WriteHeader(http.StatusTeapot)
		return true
	}
	takeNothing := func(http.ResponseWriter, *http.Request, *registry.Device, []byte) bool {
		seen = append(seen, "other")
		return false
	}
	g := newTestGateway(t, Config{Registry: registryOf(d), Answers: []Answer{takeStatus, takeNothing}})
	cases := []struct {
		name     string
		id       Identity
		watch    bool
		path     string
		code     int
		forwards bool
		seen     string
	}{
		{"taken by the first answer", Identity{kind: deviceIdentity, device: d}, false, "/api/v1/nodes/pico-1/status", http.StatusTeapot, false, "status pico-1 {}"},
		{"taken by none: forwarded", Identity{kind: deviceIdentity, device: d}, false, "/api/v1/nodes/pico-1", 200, true, "status pico-1 {},other"},
		{"a watch: forwarded untouched", Identity{kind: deviceIdentity, device: d}, true, "/api/v1/nodes/pico-1/status", 200, true, ""},
		{"the shared identity: forwarded untouched", Identity{kind: sharedIdentity}, false, "/api/v1/nodes/pico-1/status", 200, true, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seen = nil
			next := &okHandler{}
			r := prepared(httptest.NewRequest("PATCH", c.path, nil), c.id, grant{rule: "test", watch: c.watch}, Body{b: []byte("{}")})
			w := httptest.NewRecorder()
			g.answer(next).ServeHTTP(w, r)
			if w.Code != c.code || (next.reached == 1) != c.forwards || strings.Join(seen, ",") != c.seen {
				t.Errorf("got %d, forwarded %v, answers asked %q; want %d, %v, %q", w.Code, next.reached == 1, seen, c.code, c.forwards, c.seen)
			}
		})
	}
	if g := newTestGateway(t, Config{Registry: registryOf(d)}); g.answer(http.NotFoundHandler()) == nil {
		t.Error("no answers: got no handler")
	}
}

func TestCollectorsAreServed(t *testing.T) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "picogate_test_answers_total", Help: "test"})
	g := newTestGateway(t, Config{Registry: registryOf(), Collectors: []prometheus.Collector{c}})
	families, err := g.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range families {
		found = found || f.GetName() == "picogate_test_answers_total"
	}
	if !found {
		t.Error("a configured collector is not among the gateway's metrics")
	}
	dup := prometheus.NewCounter(prometheus.CounterOpts{Name: "picogate_requests_total", Help: "clash"})
	if _, err := New(Config{Upstream: g.cfg.Upstream, Transport: http.DefaultTransport, Registry: registryOf(), Collectors: []prometheus.Collector{dup}}); err == nil {
		t.Error("a collector clashing with the gateway's own metrics: got no error, want one")
	}
}

// TestAdmitPriority: with Config.Priority, a quarter of MaxInFlight is kept for heartbeats of boards
// already up; other requests are refused at three quarters (Retry-After spread over 3 to 7 s), and a
// priority request waits up to AdmitWait for a slot.
func TestAdmitPriority(t *testing.T) {
	d := dev("pico-1", registry.AuthToken)
	prio := func(r *http.Request, _ *registry.Device) bool { return r.URL.Path == "/hb" }
	g := newTestGateway(t, Config{Registry: registryOf(d), MaxInFlight: 4, Priority: prio, AdmitWait: 300 * time.Millisecond})
	release := make(chan struct{})
	entered := make(chan struct{}, 8)
	held := g.admit(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	id := Identity{kind: deviceIdentity, device: d}
	send := func(h http.Handler, path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, prepared(httptest.NewRequest("PATCH", path, nil), id, grant{rule: "test"}))
		return w
	}
	var wg sync.WaitGroup
	for range 3 { // three quarters taken by ordinary requests
		wg.Go(func() { send(held, "/boot") })
		<-entered
	}
	if w := send(held, "/boot"); w.Code != 503 {
		t.Errorf("an ordinary request at three quarters: got %d, want 503", w.Code)
	} else if ra := w.Header().Get("Retry-After"); ra < "3" || ra > "7" || len(ra) != 1 {
		t.Errorf("Retry-After: got %q, want 3 to 7", ra)
	}
	wg.Go(func() { send(held, "/hb") }) // the reserved quarter
	<-entered
	start := time.Now()
	if w := send(held, "/hb"); w.Code != 503 || time.Since(start) < 300*time.Millisecond {
		t.Errorf("a heartbeat with every slot taken: got %d after %v, want 503 after waiting 300ms", w.Code, time.Since(start))
	}
	// A slot frees up while a heartbeat waits: it is admitted.
	done := make(chan int)
	go func() { done <- send(g.admit(&okHandler{}), "/hb").Code }()
	time.AfterFunc(50*time.Millisecond, func() { release <- struct{}{} })
	if code := <-done; code != 200 {
		t.Errorf("a heartbeat while a slot frees up: got %d, want 200", code)
	}
	close(release)
	wg.Wait()
}

// TestWatchAnswersAndForwarded: a watch goes to Config.WatchAnswers (never to Answers), anything else
// to Answers; a request none takes is forwarded, and Config.Forwarded is told the API server's status.
func TestWatchAnswersAndForwarded(t *testing.T) {
	d := dev("pico-1", registry.AuthToken)
	var asked []string
	var told []string
	serveWatch := func(w http.ResponseWriter, r *http.Request, _ *registry.Device, _ []byte) bool {
		asked = append(asked, "watch "+r.URL.Path)
		if r.URL.Path != "/served" {
			return false
		}
		w.WriteHeader(http.StatusOK)
		return true
	}
	other := func(_ http.ResponseWriter, r *http.Request, _ *registry.Device, _ []byte) bool {
		asked = append(asked, "other "+r.URL.Path)
		return false
	}
	forwarded := func(r *http.Request, dv *registry.Device) func(int) {
		if r.URL.Path == "/ignored" {
			return nil
		}
		return func(code int) { told = append(told, dv.Name+" "+r.URL.Path+" "+strconv.Itoa(code)) }
	}
	g := newTestGateway(t, Config{Registry: registryOf(d), Answers: []Answer{other}, WatchAnswers: []Answer{serveWatch}, Forwarded: forwarded})
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		recordFrom(r).noteUpstream()
		w.WriteHeader(http.StatusForbidden)
	})
	device := Identity{kind: deviceIdentity, device: d}
	cases := []struct {
		name        string
		id          Identity
		watch       bool
		path        string
		code        int
		asked, told string
	}{
		{"a watch taken by a watch answer", device, true, "/served", 200, "watch /served", ""},
		{"a watch none takes: forwarded, and told", device, true, "/other", 403, "watch /other", "pico-1 /other 403"},
		{"not a watch: never to the watch answers", device, false, "/served", 403, "other /served", "pico-1 /served 403"},
		{"the shared identity: forwarded, nothing told", Identity{kind: sharedIdentity}, true, "/other", 403, "", ""},
		{"not asked about: forwarded, nothing told", device, false, "/ignored", 403, "other /ignored", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			asked, told = nil, nil
			r := prepared(httptest.NewRequest("GET", c.path, nil), c.id, grant{rule: "test", watch: c.watch}, Body{})
			rec := httptest.NewRecorder()
			g.answer(upstream).ServeHTTP(rec, r)
			if rec.Code != c.code || strings.Join(asked, ",") != c.asked || strings.Join(told, ",") != c.told {
				t.Errorf("got %d, asked %q, told %q; want %d, %q, %q", rec.Code, asked, told, c.code, c.asked, c.told)
			}
		})
	}
}
