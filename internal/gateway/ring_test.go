package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestWireHeadBytes holds wireHeadBytes to what a real net/http server writes before the body.
func TestWireHeadBytes(t *testing.T) {
	tests := []struct {
		name   string
		code   int
		header map[string]string
		close  bool
	}{
		{"compacted answer to the firmware", 200, map[string]string{"Content-Type": "application/json", "Date": "Tue, 01 Dec 2026 09:00:00 GMT"}, true},
		{"no Date: net/http adds one", 201, map[string]string{"Content-Type": "application/json"}, true},
		{"keep-alive", 200, map[string]string{"Content-Type": "application/json", "Date": "Tue, 01 Dec 2026 09:00:00 GMT"}, false},
		{"a summary", 200, map[string]string{"Content-Type": "application/json", HeaderFit: "summary"}, true},
		{"a refusal", 406, map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"}, true},
		{"a Connection header of the handler's", 409, map[string]string{"Content-Type": "application/json", "Connection": "keep-alive"}, true},
		{"an unknown code", 299, map[string]string{"Content-Type": "application/json"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"kind":"Node"}`
			var predicted int
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				predicted = wireHeadBytes(r, tt.code, w.Header())
				w.WriteHeader(tt.code)
				_, _ = io.WriteString(w, body)
			}))
			defer srv.Close()
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			connection := "keep-alive"
			if tt.close {
				connection = "close"
			}
			fmt.Fprintf(conn, "GET /x HTTP/1.1\r\nHost: h\r\nUser-Agent: k3s-pico-node/1.0\r\nConnection: %s\r\n\r\n", connection)
			rd := bufio.NewReader(conn)
			head := 0
			for {
				line, err := rd.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				head += len(line)
				if line == "\r\n" {
					break
				}
			}
			if head != predicted {
				t.Errorf("got %d bytes of status line and headers on the wire, want wireHeadBytes' %d", head, predicted)
			}
		})
	}
}

// ringAnswer runs the compaction step for a ring-limited client (the firmware's User-Agent, Connection:
// close) over an upstream answer, and returns what the client would receive on the wire, headers
// included, as a real server writes it.
func ringAnswer(t *testing.T, g *Gateway, method, path string, code int, upstream string) (wire []byte, resp *http.Response) {
	t.Helper()
	h := g.compaction(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Audit-Id", "0f4c2e4b-1b7a-4f0e-9a43-7d7e0b9c1a55")
		w.Header().Set("Cache-Control", "no-cache, private")
		w.Header().Set("Date", "Tue, 01 Dec 2026 09:00:00 GMT")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, upstream)
	}))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, prepared(r, grant{}))
	}))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: 192.168.1.10:6080\r\nUser-Agent: k3s-pico-node/1.0\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", method, path)
	wire, err = io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(bufio.NewReader(bytes.NewReader(wire)), nil)
	if err != nil {
		t.Fatalf("reading %q: %v", wire, err)
	}
	return wire, resp
}

func TestFitRing(t *testing.T) {
	big := strings.Repeat("x", 2100)
	node := func(extra string) string {
		return `{"kind":"Node","apiVersion":"v1","metadata":{"name":"pico-1","uid":"u-1","resourceVersion":"42","managedFields":[{"manager":"m"}]},` +
			`"spec":{"taints":[{"key":"node.kubernetes.io/unreachable","effect":"NoSchedule"}]},"status":{"conditions":[{"type":"Ready","status":"Unknown","message":"Kubelet stopped posting node status."}],"x":"` + extra + `"}}`
	}
	lastApplied := strings.ReplaceAll(`{"apiVersion":"v1","data":{"memory_values":"`+strings.Repeat("1,", 400)+`"},"kind":"ConfigMap"}`, `"`, `\"`)
	configMap := `{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"pico-config","namespace":"default","annotations":{"kubectl.kubernetes.io/last-applied-configuration":"` + lastApplied + `"}},"data":{"memory_values":"` + strings.Repeat("1,", 400) + `"}}`
	tests := []struct {
		name        string
		method      string
		code        int
		upstream    string
		ua          []string
		wantCode    int
		wantFit     string
		wantIn      []string // parts of the body
		wantNot     []string
		wantActions map[string]float64
	}{
		{name: "a heartbeat's Node that fits is sent whole", method: "PATCH", code: 200, upstream: node(""),
			wantCode: 200, wantIn: []string{`"message":"Kubelet stopped posting node status."`, `"taints"`}},
		{name: "a heartbeat's Node after an outage is summarized", method: "PATCH", code: 200, upstream: node(big),
			wantCode: 200, wantFit: "summary", wantIn: []string{`"uid":"u-1"`, `"resourceVersion":"42"`, `{"type":"Ready","status":"Unknown"}`}, wantNot: []string{"message", "taints"},
			wantActions: map[string]float64{"summarized": 1}},
		{name: "a kubectl-applied ConfigMap fits once the annotation is gone", method: "GET", code: 200, upstream: configMap,
			wantCode: 200, wantIn: []string{`"data":{"memory_values":"1,1,`}, wantNot: []string{"last-applied"}},
		{name: "a read too big is refused, not cut", method: "GET", code: 200, upstream: node(big),
			wantCode: 406, wantIn: []string{`"reason":"NotAcceptable"`, "over this device's 2047-byte receive limit"}, wantNot: []string{"pico-1"},
			wantActions: map[string]float64{"refused": 1}},
		{name: "an error too big keeps its code", method: "PATCH", code: 422, upstream: `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"` + big + `","reason":"Invalid","code":422}`,
			wantCode: 422, wantIn: []string{`"reason":"Invalid"`, "xxx…"}, wantActions: map[string]float64{"shortened": 1}},
		{name: "a client that is not ring-limited gets it all", method: "GET", code: 200, upstream: node(big), ua: []string{"someone-else/"},
			wantCode: 200, wantIn: []string{big}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ua := tt.ua
			if ua == nil {
				ua = []string{DefaultRingUserAgent}
			}
			g := newTestGateway(t, Config{SharedIdentity: true, Compact: true, RingUserAgents: ua})
			wire, resp := ringAnswer(t, g, tt.method, "/api/v1/nodes/pico-1/status", tt.code, tt.upstream)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantCode {
				t.Errorf("got %d %s, want %d", resp.StatusCode, body, tt.wantCode)
			}
			if tt.ua == nil && len(wire) > DefaultRingBytes {
				t.Errorf("got %d bytes on the wire, want at most %d", len(wire), DefaultRingBytes)
			}
			if !json.Valid(body) || resp.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
				t.Errorf("got body %q with Content-Length %s, want whole JSON", body, resp.Header.Get("Content-Length"))
			}
			if got := resp.Header.Get(HeaderFit); got != tt.wantFit {
				t.Errorf("got %s %q, want %q", HeaderFit, got, tt.wantFit)
			}
			if resp.Header.Get("Date") == "" {
				t.Errorf("got no Date, want it kept: the firmware sets its clock from it")
			}
			for _, w := range tt.wantIn {
				if !strings.Contains(string(body), w) {
					t.Errorf("got body %.300s, want %q in it", body, w)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(string(body), w) {
					t.Errorf("got body %.300s, want no %q", body, w)
				}
			}
			for _, a := range []string{"summarized", "shortened", "refused"} {
				if got := counterValue(t, g.metrics.ringFit.WithLabelValues(a)); got != tt.wantActions[a] {
					t.Errorf("picogate_ring_fit_total{action=%q}: got %v, want %v", a, got, tt.wantActions[a])
				}
			}
			t.Logf("%d bytes on the wire", len(wire))
		})
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
