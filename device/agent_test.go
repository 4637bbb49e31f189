package device

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNewReportsEveryProblem(t *testing.T) {
	_, err := New(Config{
		Name: "Pico_1", Gateway: "ftp://x", Token: "a b", Signer: SignerFunc(func(*http.Request, []byte) error { return nil }),
		Capacity: Capacity{Memory: "lots", Pods: -1}, LeaseInterval: time.Minute, Jitter: 2, InternalIP: "not-ip",
		Apps: map[string]App{"": nil},
	})
	if err == nil {
		t.Fatal("got nil error")
	}
	for _, want := range []string{"name:", "gateway", "not both", "white space", "capacity memory", "capacity pods", "lease interval", "jitter", "internal ip", "apps:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to mention %q", err, want)
		}
	}
}

func TestNewDefaults(t *testing.T) {
	a, err := New(Config{Name: "pico-1", Gateway: "http://127.0.0.1:6080/"})
	if err != nil {
		t.Fatal(err)
	}
	c := a.cfg
	if c.Gateway != "http://127.0.0.1:6080" || c.LeaseInterval != 10*time.Second || c.LeaseDuration != 40*time.Second ||
		c.StatusReportInterval != 5*time.Minute || c.Capacity != (Capacity{"1", "264Ki", 4}) || c.Board != "rp2040" || c.Jitter != 0.1 {
		t.Errorf("got defaults %+v", c)
	}
}

func TestValidQuantity(t *testing.T) {
	for q, want := range map[string]bool{"1": true, "264Ki": true, "500m": true, "1.5": true, "2k": true, "": false, "Ki": false, "1.": false, "1Kb": false, "-1": false} {
		if got := validQuantity(q); got != want {
			t.Errorf("validQuantity(%q) = %v, want %v", q, got, want)
		}
	}
}

func TestLookupApp(t *testing.T) {
	a := &Agent{apps: BuiltinApps()}
	for image, want := range map[string]string{
		BlinkImage: BlinkImage, BlinkImage + ":v2": BlinkImage, SensorImage + "@sha256:abc": SensorImage,
		"nginx": "", "picogate.io/apps/blinker": "", "localhost:5000/picogate.io/apps/blink": "",
	} {
		if _, got := a.lookupApp(image); got != want {
			t.Errorf("lookupApp(%q) = %q, want %q", image, got, want)
		}
	}
}

func TestPodPhase(t *testing.T) {
	run := ctrState{kind: 'r'}
	ok := ctrState{kind: 't', exitCode: 0}
	bad := ctrState{kind: 't', exitCode: 1}
	wait := ctrState{kind: 'w'}
	tests := []struct {
		policy string
		states []ctrState
		last   []ctrState
		final  bool
		want   string
	}{
		{"Always", []ctrState{run}, nil, false, "Running"},
		{"Always", []ctrState{wait}, nil, false, "Pending"},
		{"Always", []ctrState{run, wait}, nil, false, "Pending"},
		{"Always", []ctrState{wait}, []ctrState{bad}, false, "Running"}, // crash-loop backoff
		{"Never", []ctrState{ok}, nil, false, "Succeeded"},
		{"Never", []ctrState{ok, bad}, nil, false, "Failed"},
		{"OnFailure", []ctrState{ok}, nil, false, "Succeeded"},
		{"OnFailure", []ctrState{wait}, []ctrState{bad}, false, "Running"},
		{"Always", []ctrState{ok}, nil, true, "Succeeded"},
		{"Always", []ctrState{bad}, nil, true, "Failed"},
		{"Always", []ctrState{wait}, nil, true, "Failed"}, // deleted before it could start
	}
	for _, tt := range tests {
		r := &podRun{w: &podWorker{}, p: &pod{restartPolicy: tt.policy}}
		for i, s := range tt.states {
			c := &ctr{status: ctrStatus{state: s}}
			if tt.last != nil {
				c.status.last = tt.last[i]
			}
			r.ctrs = append(r.ctrs, c)
		}
		if got := r.phase(tt.final); got != tt.want {
			t.Errorf("%s %v last %v final %v: got %s, want %s", tt.policy, tt.states, tt.last, tt.final, got, tt.want)
		}
	}
}

func TestBackoffStaysWithinBounds(t *testing.T) {
	b := &backoff{min: 100 * time.Millisecond, max: time.Second}
	prevCap := time.Duration(0)
	for i := range 20 {
		d := b.next()
		if d < b.cur/2 || d > b.cur || b.cur > b.max || b.cur < prevCap {
			t.Fatalf("step %d: got %s with step %s (max %s)", i, d, b.cur, b.max)
		}
		prevCap = b.cur
	}
	if b.cur != time.Second {
		t.Errorf("got step %s after 20 failures, want the cap 1s", b.cur)
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("after reset: got %s, want at most 100ms", d)
	}
	if d := b.retryDelay(&APIError{Code: 429, RetryAfter: 7 * time.Second}); d != 7*time.Second {
		t.Errorf("retryDelay with Retry-After 7: got %s, want 7s", d)
	}
}

func TestJitterNeverLengthens(t *testing.T) {
	a := &Agent{cfg: Config{Jitter: 0.1}}
	for range 1000 {
		if d := a.jitter(10 * time.Second); d > 10*time.Second || d < 9*time.Second {
			t.Fatalf("got %s, want within [9s, 10s]", d)
		}
	}
}

func TestServerClock(t *testing.T) {
	local := time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC) // a board without an RTC
	c := &clock{now: func() time.Time { return local }, server: true}
	c.observe("Tue, 01 Dec 2026 09:00:00 GMT")
	if got := c.Now(); !got.Equal(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)) {
		t.Errorf("got %s, want the server's time", got)
	}
	c.observe("Tue, 01 Dec 2026 09:00:01 GMT") // within resolution: kept
	if got := c.Now(); !got.Equal(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)) {
		t.Errorf("got %s, want the offset unchanged by a 1 s step", got)
	}
}

// TestLeaseHonoursRetryAfter runs the lease loop against a small fake that
// answers 429 with Retry-After: 1 once, and checks the retry waited for it
// and that the token header was sent.
func TestLeaseHonoursRetryAfter(t *testing.T) {
	var mu sync.Mutex
	var times []time.Time
	var auth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		auth = append(auth, r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		if len(times) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"kind":"Status","code":429,"reason":"TooManyRequests","message":"slow down"}`))
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"kind":"Lease"}`))
	}))
	defer srv.Close()
	a, err := New(Config{Name: "pico-1", Gateway: srv.URL, Token: "pgt_test", BackoffMin: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.leaseLoop(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for a.Status().LeaseRenewals == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(times) < 2 {
		t.Fatalf("got %d requests, want 2", len(times))
	}
	if gap := times[1].Sub(times[0]); gap < time.Second {
		t.Errorf("retry after %s, want at least the 1 s Retry-After", gap)
	}
	for _, h := range auth {
		if h != "Bearer pgt_test" {
			t.Errorf("Authorization: got %q, want Bearer pgt_test", h)
		}
	}
	if s := a.Status(); s.Errors["http-429"] != 1 || !strings.Contains(s.LastError, "slow down") || strings.Contains(s.LastError, "pgt_test") {
		t.Errorf("got errors %v last %q, want one http-429 and no token in the message", s.Errors, s.LastError)
	}
}

// TestStatusRetryWaitsForRetryAfter: a refused status patch is retried after the server's Retry-After,
// not at once (a tight retry loop was what turned a fleet's 503s into 429s).
func TestStatusRetryWaitsForRetryAfter(t *testing.T) {
	var mu sync.Mutex
	var times []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		w.Header().Set("Content-Type", "application/json")
		if len(times) <= 2 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"kind":"Status","code":503,"reason":"ServiceUnavailable","message":"busy"}`))
			return
		}
		_, _ = w.Write([]byte(`{"kind":"Node","metadata":{"name":"pico-1"}}`))
	}))
	defer srv.Close()
	a, err := New(Config{Name: "pico-1", Gateway: srv.URL, Token: "pgt_test", InternalIP: "192.168.1.20", BackoffMin: 10 * time.Millisecond, StatusCheckInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.statusLoop(ctx); close(done) }()
	a.markDirty()
	deadline := time.Now().Add(5 * time.Second)
	for a.Status().StatusPatches == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(times) != 3 {
		t.Fatalf("got %d requests, want 3 (two refused, then one accepted)", len(times))
	}
	for i := 1; i < 3; i++ {
		if gap := times[i].Sub(times[i-1]); gap < time.Second {
			t.Errorf("retry %d after %s, want at least the 1 s Retry-After", i, gap)
		}
	}
}

func TestRunTwice(t *testing.T) {
	a, _ := New(Config{Name: "pico-1", Gateway: "http://127.0.0.1:1"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.Run(ctx); err != nil {
		t.Errorf("first Run with a done ctx: got %v, want nil", err)
	}
	if err := a.Run(ctx); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("second Run: got %v, want a 'called twice' error", err)
	}
}
