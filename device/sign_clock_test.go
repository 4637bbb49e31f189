package device

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSignedRequestsUseTheGatewaysClock: a board whose clock is ten minutes wrong (no RTC) gets the
// gateway's time from GET /picogate/v1/time before it signs anything.
func TestSignedRequestsUseTheGatewaysClock(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/picogate/v1/time" || r.Header.Get("Authorization") != "" {
			t.Errorf("got %s %s with Authorization %q, want an unsigned GET of the time", r.Method, r.URL.Path, r.Header.Get("Authorization"))
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"unix":` + strconv.FormatInt(time.Now().Unix(), 10) + `}`))
	}))
	defer srv.Close()
	a, err := New(Config{Name: "pico-1", Gateway: srv.URL, Key: make([]byte, KeySize), ServerClock: true,
		Now: func() time.Time { return time.Now().Add(-10 * time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	a.tr.syncClock(context.Background())
	req, err := a.tr.newRequest(context.Background(), "GET", "/api/v1/nodes/pico-1", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	auth := req.Header.Get("Authorization")
	_, rest, ok := strings.Cut(auth, "Timestamp=")
	ts, err := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
	if !ok || err != nil {
		t.Fatalf("got Authorization %q, want a signed request", auth)
	}
	if d := ts - time.Now().Unix(); d < -2 || d > 2 {
		t.Errorf("signed timestamp is %ds from the gateway's clock, want within 2s (the board's clock is 10 min off)", d)
	}
}
