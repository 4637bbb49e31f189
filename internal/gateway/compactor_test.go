package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

const nodeJSON = `{"kind":"Node","apiVersion":"v1","metadata":{"name":"pico-1","managedFields":[{"manager":"k3s-pico-node","operation":"Update"}]},"status":{}}`

func TestCompaction(t *testing.T) {
	tests := []struct {
		name        string
		ctype       string
		body        string
		chunks      int
		watch       bool
		head        bool
		wantBody    string
		wantLength  bool
		wantHeaders map[string]string
	}{
		{name: "node", ctype: "application/json", body: nodeJSON, chunks: 3,
			wantBody: `{"kind":"Node","apiVersion":"v1","metadata":{"name":"pico-1"},"status":{}}`, wantLength: true},
		{name: "invalid json kept", ctype: "application/json", body: `{"kind":`, chunks: 1, wantBody: `{"kind":`, wantLength: true},
		{name: "not json", ctype: "text/plain", body: "ok", chunks: 1, wantBody: "ok"},
		{name: "over cap passes through", ctype: "application/json", body: `{"a":"` + strings.Repeat("x", 5000) + `","metadata":{"managedFields":[]}}`, chunks: 4,
			wantBody: `{"a":"` + strings.Repeat("x", 5000) + `","metadata":{"managedFields":[]}}`},
		{name: "watch events", ctype: "application/json", watch: true, chunks: 5,
			body:     `{"type":"ADDED","object":` + nodeJSON + "}\n",
			wantBody: `{"type":"ADDED","object":{"kind":"Node","apiVersion":"v1","metadata":{"name":"pico-1"},"status":{}}}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newTestGateway(t, Config{SharedIdentity: true, Compact: true, MaxCompactBytes: 4096})
			h := g.compaction(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ctype)
				w.Header().Set("Audit-Id", "a1")
				w.Header().Set("X-Kubernetes-Pf-Flowschema-Uid", "f")
				w.Header().Set("Date", "Tue, 01 Dec 2026 09:00:00 GMT")
				w.WriteHeader(200)
				step := max(len(tt.body)/tt.chunks, 1)
				for i := 0; i < len(tt.body); i += step {
					_, _ = w.Write([]byte(tt.body[i:min(i+step, len(tt.body))]))
					w.(http.Flusher).Flush()
				}
			}))
			rec := httptest.NewRecorder()
			req := prepared(httptest.NewRequest("GET", "/api/v1/nodes/pico-1", nil), grant{watch: tt.watch})
			h.ServeHTTP(rec, req)
			if got := rec.Body.String(); got != tt.wantBody {
				t.Errorf("body: got %q, want %q", got, tt.wantBody)
			}
			cl := rec.Header().Get("Content-Length")
			if tt.wantLength && cl != strconv.Itoa(len(tt.wantBody)) {
				t.Errorf("Content-Length: got %q, want %d", cl, len(tt.wantBody))
			}
			for _, k := range []string{"Audit-Id", "X-Kubernetes-Pf-Flowschema-Uid"} {
				if rec.Header().Get(k) != "" {
					t.Errorf("%s: got it sent to the device, want it dropped", k)
				}
			}
			if rec.Header().Get("Date") == "" {
				t.Errorf("Date: got none, want it kept (devices set their clock from it)")
			}
			if got := recordFrom(req).auditID; got != "a1" {
				t.Errorf("audit id: got %q, want a1 recorded for the log", got)
			}
		})
	}
}

func TestCompactionOffPassesThrough(t *testing.T) {
	g := newTestGateway(t, Config{SharedIdentity: true})
	h := g.compaction(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(nodeJSON))
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, prepared(httptest.NewRequest("GET", "/", nil), grant{}))
	if rec.Body.String() != nodeJSON {
		t.Errorf("got %q, want the body untouched", rec.Body.String())
	}
}

func TestCompactionTruncatedUpstream(t *testing.T) {
	g := newTestGateway(t, Config{SharedIdentity: true, Compact: true})
	h := g.compaction(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(nodeJSON[:40]))
		panic(http.ErrAbortHandler) // what ReverseProxy does when the upstream body breaks off
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, prepared(httptest.NewRequest("GET", "/", nil), grant{}))
	if rec.Code != http.StatusBadGateway {
		t.Fatalf("got %d, want 502", rec.Code)
	}
	if s := readStatus(t, rec.Body.Bytes()); !strings.Contains(s.Message, "cut off") {
		t.Errorf("got %q, want a message saying the response was cut off", s.Message)
	}
}

// TestCompactionWatchCutOff: a compacted watch whose stream stops mid-event ends after its last whole
// event with a proper end of stream: an ERROR event first when the API server's stream broke off,
// nothing more when the gateway itself ended it (shutdown, revocation). A stream passed through
// untouched (an event over the cap) cannot be ended cleanly and is still cut.
func TestCompactionWatchCutOff(t *testing.T) {
	event := `{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"p"}}}` + "\n"
	tests := []struct {
		name      string
		cancel    bool
		partial   string
		wantBody  string
		wantPanic bool
	}{
		{name: "upstream broke off", partial: `{"type":"MODIFIED","obj`,
			wantBody: event + `{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the Kubernetes API server's watch stream broke off; watch again","reason":"ServiceUnavailable","code":503}}` + "\n"},
		{name: "gateway ended it", cancel: true, partial: `{"type":"MODIFIED","obj`, wantBody: event},
		{name: "event over the cap", partial: `{"type":"MODIFIED","object":"` + strings.Repeat("x", 5000), wantPanic: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newTestGateway(t, Config{SharedIdentity: true, Compact: true, MaxCompactBytes: 4096})
			h := g.compaction(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(200)
				_, _ = w.Write([]byte(event + tt.partial))
				panic(http.ErrAbortHandler) // what ReverseProxy does when the stream breaks off
			}))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				cancel()
			}
			rec := httptest.NewRecorder()
			req := prepared(httptest.NewRequest("GET", "/api/v1/pods?watch=1", nil).WithContext(ctx), grant{watch: true})
			panicked := func() (p bool) {
				defer func() { p = recover() == http.ErrAbortHandler }()
				h.ServeHTTP(rec, req)
				return false
			}()
			if panicked != tt.wantPanic {
				t.Fatalf("connection aborted: got %v, want %v", panicked, tt.wantPanic)
			}
			if !tt.wantPanic && rec.Body.String() != tt.wantBody {
				t.Errorf("body: got %q, want %q", rec.Body.String(), tt.wantBody)
			}
		})
	}
}
