package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestBodyStalledPastDeadlineIsCutOff: an upstream that sends part of a body and stalls is cut off at
// the upstream timeout, and the device is told so (502) every time. The upstream server ends its
// response when the gateway's cancellation reaches it, and net/http's client sometimes reads that end
// as a clean one: relayed as it came, the part would reach the device as a whole 200.
func TestBodyStalledPastDeadlineIsCutOff(t *testing.T) {
	part := `{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c"},"data":{"blob":"` + strings.Repeat("x", 900)
	upstream := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, part)
		w.(http.Flusher).Flush()
		select { // then nothing, until the gateway goes away
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	}))
	upstream.StartTLS()
	defer upstream.Close()
	transport := upstream.Client().Transport.(*http.Transport).Clone()
	transport.ForceAttemptHTTP2 = false
	transport.TLSClientConfig.NextProtos = []string{"http/1.1"}
	g := newTestGateway(t, Config{SharedIdentity: true, Compact: true, Upstream: mustURL(upstream.URL), Transport: transport,
		UpstreamTimeout: 50 * time.Millisecond, DeviceRate: 1000, DeviceBurst: 1000})
	front := httptest.NewServer(g.Handler())
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{}}
	got := map[string]int{}
	for range 40 {
		resp, err := client.Get(front.URL + "/api/v1/namespaces/default/configmaps/c")
		if err != nil {
			got["error: "+err.Error()]++
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			got["cut: "+err.Error()]++
		case resp.StatusCode == http.StatusBadGateway && strings.Contains(string(b), "cut off"):
			got["502 cut off"]++
		default:
			got[resp.Status+" with "+string(b[:min(len(b), 40)])]++
		}
	}
	if got["502 cut off"] != 40 {
		t.Errorf("40 requests whose upstream body stalled: got %v, want every one 502 saying it was cut off", got)
	}
}
