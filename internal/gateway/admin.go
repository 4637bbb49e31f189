package gateway

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MetricsHandler serves the gateway's Prometheus metrics (admin port only).
func (g *Gateway) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(g.metrics.reg, promhttp.HandlerOpts{})
}

// AdminMux builds the admin port's handler: /healthz, /readyz, /metrics.
func (g *Gateway) AdminMux(healthz, readyz http.HandlerFunc) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /livez", healthz)
	mux.HandleFunc("GET /readyz", readyz)
	mux.Handle("GET /metrics", g.MetricsHandler())
	return mux
}
