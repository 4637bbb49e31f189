package asdevice

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestDoImpersonatesTheDevice(t *testing.T) {
	var got *http.Request
	var gotBody string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(context.Background())
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"kind":"Status"}`))
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL + "/prefix/")
	c, err := New(Config{Base: base, Transport: http.DefaultTransport})
	if err != nil {
		t.Fatal(err)
	}
	as := Identity{User: []string{"system:node:pico-1"}, Groups: []string{"system:nodes", "picogate:devices"}}
	res, err := c.Do(context.Background(), as, Request{Method: "PATCH", Path: "/api/v1/nodes/pico-1/status",
		ContentType: "application/strategic-merge-patch+json", Body: []byte(`{"status":{}}`), UserAgent: "k3s-pico-node/1.0"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Code != 503 || res.RetryAfter != "3" || string(res.Body) != `{"kind":"Status"}` {
		t.Errorf("got %d %q %q, want 503, Retry-After 3 and the body", res.Code, res.RetryAfter, res.Body)
	}
	for _, c := range []struct{ what, got, want string }{
		{"path", got.URL.Path, "/prefix/api/v1/nodes/pico-1/status"},
		{"method", got.Method, "PATCH"},
		{"user", strings.Join(got.Header["Impersonate-User"], ","), "system:node:pico-1"},
		{"groups", strings.Join(got.Header["Impersonate-Group"], ","), "system:nodes,picogate:devices"},
		{"user agent", got.Header.Get("User-Agent"), "k3s-pico-node/1.0"},
		{"content type", got.Header.Get("Content-Type"), "application/strategic-merge-patch+json"},
		{"accept", got.Header.Get("Accept"), "application/json"},
		{"body", gotBody, `{"status":{}}`},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
		}
	}
}

func TestNewReportsEveryProblem(t *testing.T) {
	_, err := New(Config{MaxResponseBytes: -1})
	for _, want := range []string{"base URL", "transport", "negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want an error naming %q", err, want)
		}
	}
}

func TestDoRefusesAnIdentityWithoutOneUser(t *testing.T) {
	base, _ := url.Parse("https://127.0.0.1:1")
	c, _ := New(Config{Base: base, Transport: http.DefaultTransport})
	if _, err := c.Do(context.Background(), Identity{}, Request{Method: "GET", Path: "/version"}); err == nil {
		t.Error("got no error for an identity without a user, want one (the gateway's own rights must never be used)")
	}
}
