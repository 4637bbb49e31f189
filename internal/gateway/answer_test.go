package gateway

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
