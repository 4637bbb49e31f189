package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/picogate/picogate/internal/registry"
)

// cannedTransport answers every request with a recorded-size Node, so the benchmark measures the
// gateway's own work per request (no TLS, no API server).
type cannedTransport struct{ body string }

func (c cannedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	h := http.Header{"Content-Type": {"application/json"}, "Audit-Id": {"0b1f"}, "X-Kubernetes-Pf-Flowschema-Uid": {"x"}, "Date": {"Tue, 01 Dec 2026 09:00:00 GMT"}}
	return &http.Response{StatusCode: 200, Header: h, Body: io.NopCloser(strings.NewReader(c.body)), ContentLength: -1, Request: r}, nil
}

func benchNode() string {
	mf := `{"manager":"k3s-pico-node","operation":"Update","apiVersion":"v1","time":"2026-12-01T09:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:status":{"f:conditions":{}}}}`
	return `{"kind":"Node","apiVersion":"v1","metadata":{"name":"pico-1","uid":"6a3e","resourceVersion":"123","creationTimestamp":"2026-12-01T09:00:00Z","labels":{"kubernetes.io/arch":"arm","kubernetes.io/os":"linux"},"managedFields":[` + mf + `]},"spec":{"taints":[{"key":"picogate.io/mcu","value":"true","effect":"NoSchedule"}]},"status":{"conditions":[` + strings.Repeat(`{"type":"Ready","status":"True","lastHeartbeatTime":"2026-12-01T09:00:00Z","lastTransitionTime":"2026-12-01T09:00:00Z","reason":"KubeletReady"},`, 4) + `{"type":"Ready","status":"True"}],"capacity":{"cpu":"1","memory":"264Ki","pods":"4"}}}`
}

// BenchmarkHandler is the per-request cost of the whole middleware chain in per-device token mode with
// the access log on (written to io.Discard in JSON, as `picogate serve --log-format json` writes it).
func BenchmarkHandler(b *testing.B) {
	d := dev("pico-1", registry.AuthToken)
	g, err := New(Config{
		Upstream:  mustURL("http://apiserver.invalid"),
		Transport: cannedTransport{body: benchNode()},
		Registry:  registryOf(d), Compact: true, AccessLog: true, DeviceRate: 1e9, DeviceBurst: 1 << 30,
		AccessLogWriter: io.Discard, AccessLogJSON: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	h := g.Handler()
	req := httptest.NewRequest("GET", "/api/v1/nodes/pico-1", nil)
	req.RemoteAddr = "192.168.1.20:40000"
	req.Header.Set("Authorization", "Bearer tok-pico-1")
	req.Header.Set("User-Agent", "k3s-pico-node/1.0")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("got %d: %s", rec.Code, rec.Body)
		}
	}
	b.StopTimer()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b.ReportMetric(float64(len(benchNode())-rec.Body.Len()), "bytes-saved/op")
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
