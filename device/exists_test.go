package device

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// TestCreateOfAnExistingObjectIsNoError: a create answered 409 because the
// object exists is an outcome the agent handles (it takes the object over),
// so it is not counted as an error: a board that reboots finds its Node, and
// the gateway's heartbeat translation may create the Lease from the board's
// first status patch before the board's own create arrives.
func TestCreateOfAnExistingObjectIsNoError(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == "POST":
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"kind":"Status","code":409,"reason":"AlreadyExists","message":"it exists"}`))
		case r.URL.Path == "/api/v1/nodes/pico-1":
			_, _ = w.Write([]byte(`{"kind":"Node","metadata":{"name":"pico-1","uid":"u-1"}}`))
		default:
			_, _ = w.Write([]byte(`{"kind":"Lease","metadata":{"name":"pico-1"}}`))
		}
	}))
	defer srv.Close()
	a, err := New(Config{Name: "pico-1", Gateway: srv.URL, Token: "pgt_test", InternalIP: "192.168.1.20", BackoffMin: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var buf []byte
	if err := a.registerOnce(ctx, &buf); err != nil {
		t.Fatalf("registering over an existing Node: %v", err)
	}
	done := make(chan struct{})
	go func() { a.leaseLoop(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for a.Status().LeaseRenewals == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	s := a.Status()
	mu.Lock()
	defer mu.Unlock()
	if !s.Registered || s.NodeUID != "u-1" || s.LeaseRenewals == 0 {
		t.Fatalf("got registered %v uid %q lease renewals %d after %v, want the Node and the Lease taken over", s.Registered, s.NodeUID, s.LeaseRenewals, got)
	}
	if len(s.Errors) != 0 || s.LastError != "" {
		t.Errorf("got errors %v (last %q), want none: each 409 was handled", s.Errors, s.LastError)
	}
}
