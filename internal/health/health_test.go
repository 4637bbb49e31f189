package health

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// setProbe is a probe whose answer the test sets.
type setProbe struct{ err atomic.Pointer[error] }

func (s *setProbe) set(err error) { s.err.Store(&err) }

func (s *setProbe) probe(context.Context) error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	return nil
}

func TestNew(t *testing.T) {
	ok := func(context.Context) error { return nil }
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none for a valid config
	}{
		{"defaults", Config{Checks: []Check{{Name: "a", Probe: ok}}}, nil},
		{"no checks", Config{}, nil},
		{"negative interval", Config{Interval: -time.Second}, []string{"must not be negative"}},
		{"negative timeout", Config{Timeout: -time.Second}, []string{"must not be negative"}},
		{"every problem at once", Config{Interval: -1, Checks: []Check{{Probe: ok}, {Name: "b"}}},
			[]string{"must not be negative", "check 0 needs a name and a probe", "check 1 needs a name and a probe"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.cfg)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				if p.cfg.Interval != time.Second || p.cfg.Timeout != 2*time.Second || p.cfg.Logger == nil {
					t.Errorf("defaults: got interval %v, timeout %v, logger %v; want 1s, 2s, a logger", p.cfg.Interval, p.cfg.Timeout, p.cfg.Logger)
				}
				return
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("got %v, want an error containing %q", err, w)
				}
			}
		})
	}
}

func TestServeReady(t *testing.T) {
	failing := errors.New("connection refused")
	degraded := Degraded{Err: errors.New("watch failing, serving the last sync")}
	for _, tc := range []struct {
		name    string
		results []error // one per check a, b; nil slice: no probe has run yet
		verbose bool
		code    int
		body    []string // substrings, in order
		absent  []string
		ready   bool
	}{
		{"before the first probe", nil, false, 503, []string{"[-]startup: first checks not run yet\n", "readyz check failed\n"}, nil, false},
		{"all passing", []error{nil, nil}, false, 200, []string{"ok"}, []string{"[+]", "readyz"}, true},
		{"all passing, verbose", []error{nil, nil}, true, 200, []string{"[+]a ok\n", "[+]b ok\n", "readyz check passed\n"}, nil, true},
		{"one failing", []error{nil, failing}, false, 503, []string{"[+]a ok\n", "[-]b failed: connection refused\n", "readyz check failed\n"}, nil, false},
		{"one degraded", []error{degraded, nil}, false, 200, []string{"[~]a degraded: watch failing", "[+]b ok\n", "degraded\n"}, []string{"readyz check"}, true},
		{"degraded and failing", []error{degraded, failing}, false, 503, []string{"[~]a degraded", "[-]b failed", "readyz check failed\n"}, nil, false},
		{"wrapped degraded", []error{nil, fmtErr(degraded)}, false, 200, []string{"[~]b"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			probes := []*setProbe{{}, {}}
			p, err := New(Config{Checks: []Check{{Name: "a", Probe: probes[0].probe}, {Name: "b", Probe: probes[1].probe}}})
			if err != nil {
				t.Fatal(err)
			}
			if tc.results != nil {
				for i, e := range tc.results {
					probes[i].set(e)
				}
				p.probe(context.Background())
			}
			target := "/readyz"
			if tc.verbose {
				target += "?verbose"
			}
			rec := httptest.NewRecorder()
			p.ServeReady(rec, httptest.NewRequest(http.MethodGet, target, nil))
			if rec.Code != tc.code {
				t.Errorf("status: got %d, want %d", rec.Code, tc.code)
			}
			body := rec.Body.String()
			rest := body
			for _, w := range tc.body {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("body %q: want %q (in this order: %q)", body, w, tc.body)
				}
				rest = rest[i+len(w):]
			}
			for _, a := range tc.absent {
				if strings.Contains(body, a) {
					t.Errorf("body %q: want no %q", body, a)
				}
			}
			if got := rec.Header().Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control: got %q, want no-store", got)
			}
			if got := rec.Header().Get("Content-Type"); got != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type: got %q, want text/plain; charset=utf-8", got)
			}
			if got := p.Ready(); got != tc.ready {
				t.Errorf("Ready: got %v, want %v", got, tc.ready)
			}
		})
	}
}

func fmtErr(err error) error { return errors.Join(errors.New("registry"), err) }

func TestServeHealth(t *testing.T) {
	rec := httptest.NewRecorder()
	ServeHealth(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != 200 || rec.Body.String() != "ok" {
		t.Errorf("got %d %q, want 200 \"ok\"", rec.Code, rec.Body.String())
	}
}

// A probe that outlives the timeout is cut off and counts as failing.
func TestProbeTimeout(t *testing.T) {
	p, err := New(Config{Timeout: 10 * time.Millisecond, Checks: []Check{{Name: "slow", Probe: func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	p.probe(context.Background())
	if p.Ready() {
		t.Fatal("Ready: got true, want false")
	}
	rec := httptest.NewRecorder()
	p.ServeReady(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if !strings.Contains(rec.Body.String(), "[-]slow failed: context deadline exceeded") {
		t.Errorf("body: got %q, want the deadline", rec.Body.String())
	}
}

// Changes are logged once: the first result when failing, then each change between failing and passing.
func TestProbeLogsChanges(t *testing.T) {
	var buf bytes.Buffer
	sp := &setProbe{}
	p, err := New(Config{Logger: slog.New(slog.NewTextHandler(&buf, nil)), Checks: []Check{{Name: "upstream", Probe: sp.probe}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		err  error
		want string // the new log output's substring; "" for none
	}{
		{nil, ""},
		{nil, ""},
		{errors.New("refused"), `level=WARN msg="readiness check failing" check=upstream err=refused`},
		{errors.New("refused again"), ""},
		{nil, `level=INFO msg="readiness check passing again" check=upstream`},
		{nil, ""},
	} {
		buf.Reset()
		sp.set(step.err)
		p.probe(context.Background())
		got := buf.String()
		if step.want == "" && got != "" || step.want != "" && (!strings.Contains(got, step.want) || strings.Count(got, "\n") != 1) {
			t.Errorf("probe returning %v: got log %q, want %q", step.err, got, step.want)
		}
	}
	// A check failing from the start is logged at once.
	buf.Reset()
	sp.set(errors.New("down"))
	p2, err := New(Config{Logger: slog.New(slog.NewTextHandler(&buf, nil)), Checks: []Check{{Name: "upstream", Probe: sp.probe}}})
	if err != nil {
		t.Fatal(err)
	}
	p2.probe(context.Background())
	if !strings.Contains(buf.String(), "readiness check failing") {
		t.Errorf("first probe failing: got log %q, want a warning", buf.String())
	}
}

// Run probes at once, then every interval, and the served state follows the probes; it returns when its
// context ends.
func TestRun(t *testing.T) {
	calls := make(chan struct{}, 100)
	sp := &setProbe{}
	sp.set(errors.New("not yet"))
	p, err := New(Config{Interval: time.Millisecond, Checks: []Check{{Name: "a", Probe: func(ctx context.Context) error {
		select {
		case calls <- struct{}{}:
		default:
		}
		return sp.probe(ctx)
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for range 3 { // the first probe and two ticks
		select {
		case <-calls:
		case <-time.After(10 * time.Second):
			t.Fatal("Run: no probe within 10s")
		}
	}
	if p.Ready() {
		t.Error("Ready with a failing check: got true, want false")
	}
	sp.set(nil)
	waitFor(t, "Ready after the check passes", p.Ready)
	sp.set(errors.New("down again"))
	waitFor(t, "not Ready after the check fails", func() bool { return !p.Ready() })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// reviewer answers SelfSubjectReviews as an API server would.
type reviewer struct {
	user string
	err  error
}

func (r reviewer) Create(_ context.Context, _ *authenticationv1.SelfSubjectReview, _ metav1.CreateOptions) (*authenticationv1.SelfSubjectReview, error) {
	if r.err != nil {
		return nil, r.err
	}
	return &authenticationv1.SelfSubjectReview{Status: authenticationv1.SelfSubjectReviewStatus{
		UserInfo: authenticationv1.UserInfo{Username: r.user}}}, nil
}

func TestCredentialCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    reviewer
		want string // a substring of the error; "" for none
	}{
		{"gateway identity", reviewer{user: "system:serviceaccount:picogate-system:picogate"}, ""},
		{"unreachable", reviewer{err: errors.New("dial tcp: connection refused")}, "API server: dial tcp: connection refused"},
		{"anonymous", reviewer{user: "system:anonymous"}, "does not accept the gateway's credential"},
		{"no user", reviewer{}, "does not accept the gateway's credential"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CredentialCheck(tc.r)(context.Background())
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
