package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/picogate/picogate/internal/registry"
)

// countingTransport answers every request with an empty JSON object and counts them.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader("{}")),
		ContentLength: 2, Request: r}, nil
}

// TestWatchTransport: with Config.WatchTransport a watch goes over it and every other request over
// Transport; without it, everything goes over Transport.
func TestWatchTransport(t *testing.T) {
	d := dev("pico-1", registry.AuthToken)
	for _, split := range []bool{true, false} {
		other, watches := &countingTransport{}, &countingTransport{}
		cfg := Config{Registry: registryOf(d), Transport: other}
		if split {
			cfg.WatchTransport = watches
		}
		h := newTestGateway(t, cfg).Handler()
		for _, target := range []string{"/api/v1/nodes/pico-1", "/api/v1/pods?fieldSelector=spec.nodeName%3Dpico-1&watch=1", "/api/v1/pods?fieldSelector=spec.nodeName%3Dpico-1"} {
			req := httptest.NewRequest("GET", target, nil)
			req.RemoteAddr = "192.168.1.20:40000"
			req.Header.Set("Authorization", "Bearer tok-pico-1")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				t.Fatalf("%s: got %d %s, want 200", target, rec.Code, rec.Body)
			}
		}
		wantOther, wantWatches := int64(2), int64(1)
		if !split {
			wantOther, wantWatches = 3, 0
		}
		if other.n.Load() != wantOther || watches.n.Load() != wantWatches {
			t.Errorf("split=%v: got %d requests on Transport and %d on WatchTransport, want %d and %d", split, other.n.Load(), watches.n.Load(), wantOther, wantWatches)
		}
	}
}
