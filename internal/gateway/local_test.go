package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/registry"
	"github.com/picogate/picogate/internal/status"
)

func TestLocalRoutes(t *testing.T) {
	tok := dev("pico-l1", registry.AuthToken)
	h := hmacDev("pico-l2")
	var seen []string
	rotate := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, DeviceFrom(r).Name)
		w.WriteHeader(http.StatusOK)
	})
	enroll := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if DeviceFrom(r) != nil {
			t.Error("anonymous route got a device")
		}
		Refuse(w, r, &status.Error{Code: http.StatusTeapot, Message: "test refusal"})
	})
	var optional []string
	reenroll := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := "-"
		if d := DeviceFrom(r); d != nil {
			name = d.Name
		}
		optional = append(optional, name)
		w.WriteHeader(http.StatusOK)
	})
	g := newTestGateway(t, Config{Registry: registryOf(tok, h), Now: func() time.Time { return t0 }, DeviceBurst: 2, DeviceRate: 0.001,
		Local: []LocalRoute{
			{Method: "POST", Path: LocalPrefix + "rotate", Name: "rotate", Device: true, Handler: rotate},
			{Method: "POST", Path: LocalPrefix + "enroll", Name: "enroll", Handler: enroll},
			{Method: "POST", Path: LocalPrefix + "reenroll", Name: "reenroll", OptionalDevice: true, Handler: reenroll},
		}})
	// Anonymous requests are limited per source address like a device (DeviceBurst 2): each case without
	// a device gets its own address.
	from := func(addr string, r *http.Request) *http.Request { r.RemoteAddr = addr + ":40000"; return r }
	req := func(method, path string, hdr ...string) *http.Request {
		r := httptest.NewRequest(method, path, nil)
		r.RemoteAddr = "192.168.1.20:40000"
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		return r
	}
	tests := []struct {
		name string
		r    *http.Request
		want int
		body string
	}{
		{"time", req("GET", "/picogate/v1/time"), 200, `"unix":` + strconv.FormatInt(t0.Unix(), 10)},
		{"time with POST", req("POST", "/picogate/v1/time"), 404, "it serves GET /picogate/v1/time"},
		{"unknown endpoint", req("GET", "/picogate/v1/nothing"), 404, "GET /picogate/v1/time"},
		{"dot dot out of the prefix", req("GET", "/picogate/v1/../../api/v1/nodes/pico-l1"), 400, ""},
		{"encoded slash", req("POST", "/picogate/v1%2Frotate"), 400, ""},
		{"anonymous", from("192.168.1.21", req("POST", "/picogate/v1/enroll")), 418, "test refusal"},
		{"anonymous, a credential is not looked at", from("192.168.1.22", req("POST", "/picogate/v1/enroll", "Authorization", "Bearer nope")), 418, ""},
		{"optional device, none", from("192.168.1.23", req("POST", "/picogate/v1/reenroll")), 200, ""},
		{"optional device, signed", signed(t, h.Key, h.Name, "POST", "/picogate/v1/reenroll", "", "", t0.Unix(), 2), 200, ""},
		{"optional device, wrong token", req("POST", "/picogate/v1/reenroll", "Authorization", "Bearer nope"), 401, ""},
		{"device route without credential", req("POST", "/picogate/v1/rotate"), 401, ""},
		{"device route with a wrong token", req("POST", "/picogate/v1/rotate", "Authorization", "Bearer nope"), 401, ""},
		{"device route with token", req("POST", "/picogate/v1/rotate", "Authorization", "Bearer tok-pico-l1"), 200, ""},
		{"device route signed", signed(t, h.Key, h.Name, "POST", "/picogate/v1/rotate", "", "", t0.Unix(), 1), 200, ""},
		{"device route, burst spent", req("POST", "/picogate/v1/rotate", "Authorization", "Bearer tok-pico-l1"), 200, ""},
		{"device route, rate limited", req("POST", "/picogate/v1/rotate", "Authorization", "Bearer tok-pico-l1"), 429, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			g.Handler().ServeHTTP(rec, tt.r)
			if rec.Code != tt.want {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, tt.want)
			}
			if !strings.Contains(rec.Body.String(), tt.body) {
				t.Errorf("got body %s, want it to contain %s", rec.Body, tt.body)
			}
		})
	}
	if strings.Join(seen, ",") != "pico-l1,pico-l2,pico-l1" {
		t.Errorf("rotate saw devices %v, want pico-l1, pico-l2, pico-l1", seen)
	}
	if strings.Join(optional, ",") != "-,pico-l2" {
		t.Errorf("reenroll saw devices %v, want none, then pico-l2", optional)
	}
}

func TestTimeEndpoint(t *testing.T) {
	g := newTestGateway(t, Config{Registry: registryOf(), Now: func() time.Time { return t0 }})
	r := httptest.NewRequest("GET", "/picogate/v1/time", nil)
	r.RemoteAddr = "10.0.0.5:1234"
	rec := httptest.NewRecorder()
	g.Handler().ServeHTTP(rec, r)
	var got struct {
		Unix    int64  `json:"unix"`
		RFC3339 string `json:"rfc3339"`
		Window  int    `json:"window"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("got %q: %v", rec.Body, err)
	}
	if got.Unix != t0.Unix() || got.RFC3339 != "2025-12-01T09:00:00Z" || got.Window != 30 {
		t.Errorf("got %+v, want %d, 2025-12-01T09:00:00Z, 30", got, t0.Unix())
	}
	if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(rec.Body.Len()) {
		t.Errorf("got Content-Length %q for %d bytes", cl, rec.Body.Len())
	}
	r = httptest.NewRequest("GET", "/picogate/v1/time", nil)
	r.RemoteAddr = "8.8.8.8:1234"
	rec = httptest.NewRecorder()
	g.Handler().ServeHTTP(rec, r)
	if rec.Code != 403 {
		t.Errorf("from outside the allowed networks: got %d, want 403 (the source check comes first)", rec.Code)
	}
}
