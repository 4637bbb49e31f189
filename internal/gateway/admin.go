package gateway

import (
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MetricsHandler serves the gateway's Prometheus metrics (admin port only).
func (g *Gateway) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(g.metrics.reg, promhttp.HandlerOpts{})
}

// AdminMux builds the admin port's handler: /healthz, /readyz, /metrics, and with profiling the
// net/http/pprof handlers under /debug/pprof/ (off by default: a profile shows request paths).
func (g *Gateway) AdminMux(healthz, readyz http.HandlerFunc, profiling bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /livez", healthz)
	mux.HandleFunc("GET /readyz", readyz)
	mux.Handle("GET /metrics", g.MetricsHandler())
	if profiling {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	}
	return mux
}
