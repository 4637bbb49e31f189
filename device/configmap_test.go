package device

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestConfigMapSendsIfNoneMatch(t *testing.T) {
	var mu sync.Mutex
	version, sent := "1", []string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/api/v1/namespaces/default/configmaps/pico-config" {
			http.NotFound(w, r)
			return
		}
		sent = append(sent, r.Header.Get("If-None-Match"))
		etag := `"` + version + `"`
		w.Header().Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"ConfigMap","metadata":{"resourceVersion":"` + version + `"},"data":{"memory_values":"[` + version + `]"}}`))
	}))
	defer srv.Close()
	a, err := New(Config{Name: "pico-1", Gateway: srv.URL, Token: "pgt_x"})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name, change, wantSent, wantValue string
	}{
		{"first read", "", "", "[1]"},
		{"unchanged: 304, the data held", "", `"1"`, "[1]"},
		{"changed: the new data", "2", `"1"`, "[2]"},
		{"unchanged again", "", `"2"`, "[2]"},
	}
	for _, s := range steps {
		mu.Lock()
		if s.change != "" {
			version = s.change
		}
		mu.Unlock()
		data, err := a.ConfigMap(context.Background(), "default", "pico-config")
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		mu.Lock()
		got := sent[len(sent)-1]
		mu.Unlock()
		if got != s.wantSent || data["memory_values"] != s.wantValue {
			t.Errorf("%s: sent If-None-Match %q and got %q, want %q and %q", s.name, got, data["memory_values"], s.wantSent, s.wantValue)
		}
	}
	if _, err := a.ConfigMap(context.Background(), "default", "missing"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a missing ConfigMap: got %v, want the 404", err)
	}
	if s := a.Status(); s.Errors["http-304"] != 0 {
		t.Errorf("got a 304 counted as an error: %v", s.Errors)
	}
}
