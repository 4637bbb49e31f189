package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/hmacauth"
	"github.com/picogate/picogate/internal/registry"
)

// BenchmarkHandlerSigned is BenchmarkHandler's request (the firmware's GET of its own node through the
// whole chain, access log on) in hmac mode, and a status PATCH with the firmware's 1 KB heartbeat body,
// against the same PATCH with a bearer token. The difference to token mode is what signing costs the
// gateway per request: body hash, HMAC, nonce cache.
func BenchmarkHandlerSigned(b *testing.B) {
	heartbeat := `{"status":{"conditions":[` + strings.Repeat(`{"type":"Ready","status":"True","reason":"KubeletReady","lastHeartbeatTime":"2026-12-01T09:00:00Z","lastTransitionTime":"2026-12-01T09:00:00Z"},`, 6) + `{"type":"Ready","status":"True"}]}}`
	for _, bc := range []struct {
		name, method, path, ctype, body string
		signed                          bool
	}{
		{"GET node/token", "GET", "/api/v1/nodes/pico-1", "", "", false},
		{"GET node/hmac", "GET", "/api/v1/nodes/pico-1", "", "", true},
		{"PATCH status/token", "PATCH", "/api/v1/nodes/pico-1/status", "application/strategic-merge-patch+json", heartbeat, false},
		{"PATCH status/hmac", "PATCH", "/api/v1/nodes/pico-1/status", "application/strategic-merge-patch+json", heartbeat, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			d := dev("pico-1", registry.AuthToken)
			if bc.signed {
				d = hmacDev("pico-1")
			}
			g, err := New(Config{
				Upstream: mustURL("http://apiserver.invalid"), Transport: cannedTransport{body: benchNode()},
				Registry: registryOf(d), Compact: true, AccessLog: true, DeviceRate: 1e9, DeviceBurst: 1 << 30,
				AccessLogWriter: io.Discard, AccessLogJSON: true, Now: func() time.Time { return t0 },
				NonceCacheSize: 1 << 13,
			})
			if err != nil {
				b.Fatal(err)
			}
			// Signed requests are made before the clock starts (signing is the device's work), 4096 at a
			// time; the nonce cache is emptied between batches, off the clock, so nonces can repeat.
			const batch = 4096
			reqs := make([]*http.Request, batch)
			auths := make([]string, batch)
			for i := range reqs {
				r := signed(b, d.Key, d.Name, bc.method, bc.path, bc.ctype, bc.body, t0.Unix(), i)
				auths[i] = r.Header.Get("Authorization")
			}
			h := g.Handler()
			b.ReportAllocs()
			cpu := startCPU()
			b.ResetTimer()
			for i := range b.N {
				if i%batch == 0 && i > 0 {
					b.StopTimer()
					g.states.get(d.Name).nonces.Store(hmacauth.NewNonceCache(1 << 13))
					b.StartTimer()
				}
				var body io.Reader
				if bc.body != "" {
					body = strings.NewReader(bc.body)
				}
				req := httptest.NewRequest(bc.method, bc.path, body)
				req.RemoteAddr = "192.168.1.20:40000"
				req.Header.Set("User-Agent", "k3s-pico-node/1.0")
				if bc.ctype != "" {
					req.Header.Set("Content-Type", bc.ctype)
				}
				if bc.signed {
					req.Header.Set("Authorization", auths[i%batch])
				} else {
					req.Header.Set("Authorization", "Bearer tok-pico-1")
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("got %d: %s", rec.Code, rec.Body)
				}
			}
			b.StopTimer()
			cpu.report(b)
		})
	}
}

// cpuClock measures the process's CPU time (user+sys) across a benchmark: on a shared machine, where
// wall time per op swings with other load, CPU time per op is the steadier figure.
type cpuClock struct{ start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuClock { return cpuClock{start: processCPU()} }

func (c cpuClock) report(b *testing.B) {
	b.ReportMetric(float64(processCPU()-c.start)/float64(b.N), "cpu-ns/op")
}
