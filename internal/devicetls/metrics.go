package devicetls

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Handshake results, the label values of picogate_tls_handshakes_total.
const (
	ResultFull    = "full"    // a full handshake: public-key work on both sides
	ResultResumed = "resumed" // a session ticket was accepted
	ResultFailed  = "failed"  // the client gave up or sent something wrong (a board that does not trust the CA ends here)
	ResultTimeout = "timeout" // not done within the handshake timeout
	ResultRefused = "refused" // the source address is outside --allow-cidr: closed before any TLS
)

// metrics are the TLS port's Prometheus metrics. Labels are fixed sets.
type metrics struct {
	handshakes *prometheus.CounterVec // result
	inFlight   prometheus.Gauge
	waiting    prometheus.Gauge
	certExpiry prometheus.Gauge
	reloads    *prometheus.CounterVec // result
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "picogate_tls_handshakes_total", Help: "Connections to the TLS device port by handshake result: full, resumed, failed, timeout, refused (source not allowed)."}, []string{"result"}),
		inFlight:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "picogate_tls_handshakes_in_flight", Help: "TLS handshakes in progress on the device port."}),
		waiting:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "picogate_tls_handshakes_waiting", Help: "1 while the TLS port stops accepting because --tls-max-handshakes are in progress."}),
		certExpiry: prometheus.NewGauge(prometheus.GaugeOpts{Name: "picogate_tls_certificate_expiry_timestamp_seconds", Help: "When the TLS device port's certificate expires (Unix time)."}),
		reloads:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "picogate_tls_certificate_reloads_total", Help: "Changes of the certificate files, by result: ok (served from then on) or error (the previous pair is kept)."}, []string{"result"}),
	}
	for _, r := range []string{ResultFull, ResultResumed, ResultFailed, ResultTimeout, ResultRefused} {
		m.handshakes.WithLabelValues(r)
	}
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("error")
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.handshakes, m.inFlight, m.waiting, m.certExpiry, m.reloads} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("registering the TLS port's metrics: %w", err)
	}
	return m, nil
}

func (m *metrics) certLoaded(c *tls.Certificate) {
	m.certExpiry.Set(float64(c.Leaf.NotAfter.Unix()))
}
