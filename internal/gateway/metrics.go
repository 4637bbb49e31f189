package gateway

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the gateway's Prometheus metrics, registered on its own registry and served only on the
// admin port. Label values are bounded: codes, policy rule names, fixed reasons, registered devices.
type metrics struct {
	reg            *prometheus.Registry
	requests       *prometheus.CounterVec   // code, route
	duration       *prometheus.HistogramVec // route (non-watch)
	inFlight       prometheus.Gauge
	watchesOpen    prometheus.Gauge
	upstreamErrors *prometheus.CounterVec // kind
	authFailures   *prometheus.CounterVec // reason
	overloaded     prometheus.Counter
	responseBytes  prometheus.Counter
	overRing       *prometheus.CounterVec // client: ring-limited (Config.RingUserAgents) or other
	ringFit        *prometheus.CounterVec // action
	compactSaved   prometheus.Counter
	compactSkipped *prometheus.CounterVec // reason
	deviceRequests *prometheus.CounterVec // device, code
	deviceLimited  *prometheus.CounterVec // device
	deviceLastSeen *prometheus.GaugeVec   // device
	// perDevice is Config.DeviceMetrics. Off, every device shares unexported stand-ins (discard*), so
	// no series exists per device.
	perDevice      bool
	discardCounter prometheus.Counter
	discardGauge   prometheus.Gauge

	requestsBy, durationBy sync.Map // the series of requests and duration, by their labels (requestsFor, durationFor)
}

func newMetrics(perDevice bool) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), perDevice: perDevice}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "picogate_requests_total", Help: "Device requests by HTTP status code and route class (the policy rule)."}, []string{"code", "route"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "picogate_request_duration_seconds", Help: "Time to answer non-watch device requests, by route class.", Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"route"})
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{Name: "picogate_requests_in_flight", Help: "Device requests being served, watches included."})
	m.watchesOpen = prometheus.NewGauge(prometheus.GaugeOpts{Name: "picogate_watches_open", Help: "Watches being streamed to devices."})
	m.upstreamErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "picogate_upstream_errors_total", Help: "Requests the API server did not answer, by kind (refused, timeout, transport, truncated)."}, []string{"kind"})
	m.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "picogate_auth_failures_total", Help: "Refused credentials by reason (never by credential)."}, []string{"reason"})
	m.overloaded = prometheus.NewCounter(prometheus.CounterOpts{Name: "picogate_overloaded_total", Help: "Requests refused with 503 because the in-flight or watch cap was reached."})
	m.responseBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "picogate_response_bytes_total", Help: "Body bytes sent to devices."})
	m.overRing = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "picogate_responses_over_ring_total", Help: "Non-watch responses larger, status line and headers included, than --ring-bytes (default 2047, the reference firmware's receive ring), by client: ring-limited (--ring-user-agents) or other."}, []string{"client"})
	m.ringFit = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "picogate_ring_fit_total", Help: "Answers to ring-limited clients changed to fit --ring-bytes, by action: summarized (a write's answer), shortened (an error's message), refused (406: the object itself is too big)."}, []string{"action"})
	m.compactSaved = prometheus.NewCounter(prometheus.CounterOpts{Name: "picogate_compaction_saved_bytes_total", Help: "Bytes removed from responses by compaction."})
	m.compactSkipped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "picogate_compaction_skipped_total", Help: "JSON responses passed through uncompacted, by reason."}, []string{"reason"})
	m.deviceRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "picogate_device_requests_total", Help: "Requests per registered device by HTTP status code."}, []string{"device", "code"})
	m.deviceLimited = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "picogate_device_rate_limited_total", Help: "Requests refused with 429 per registered device."}, []string{"device"})
	m.deviceLastSeen = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "picogate_device_last_seen_timestamp_seconds", Help: "When a registered device last made a request (Unix time)."}, []string{"device"})
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.inFlight, m.watchesOpen, m.upstreamErrors, m.authFailures, m.overloaded,
		m.responseBytes, m.overRing, m.ringFit, m.compactSaved, m.compactSkipped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	if perDevice {
		for _, c := range []prometheus.Collector{m.deviceRequests, m.deviceLimited, m.deviceLastSeen} {
			f(c)
		}
	}
	m.discardCounter = prometheus.NewCounter(prometheus.CounterOpts{Name: "picogate_discarded"})
	m.discardGauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "picogate_discarded"})
	for _, r := range authReasons {
		m.authFailures.WithLabelValues(r)
	}
	for _, c := range []string{"ring-limited", "other"} {
		m.overRing.WithLabelValues(c)
	}
	for _, a := range []string{"summarized", "shortened", "refused"} {
		m.ringFit.WithLabelValues(a)
	}
	return m
}

// requestLabels are the labels of picogate_requests_total.
type requestLabels struct {
	code int
	rule string
}

// requestsFor is picogate_requests_total's counter for code and rule, looked up in the vector once:
// a request finds it in a sync.Map, without a lock, a hash of its labels or a string of its code.
func (m *metrics) requestsFor(code int, rule string) prometheus.Counter {
	k := requestLabels{code, rule}
	if c, ok := m.requestsBy.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c := m.requests.WithLabelValues(strconv.Itoa(code), rule)
	m.requestsBy.Store(k, c)
	return c
}

// durationFor is picogate_request_duration_seconds's histogram for rule, looked up once.
func (m *metrics) durationFor(rule string) prometheus.Observer {
	if o, ok := m.durationBy.Load(rule); ok {
		return o.(prometheus.Observer)
	}
	o := m.duration.WithLabelValues(rule)
	m.durationBy.Store(rule, o)
	return o
}

// forgetDevice drops a removed device's series so the label set stays bounded by the registry.
func (m *metrics) forgetDevice(name string) {
	if !m.perDevice {
		return
	}
	m.deviceRequests.DeletePartialMatch(prometheus.Labels{"device": name})
	m.deviceLimited.DeleteLabelValues(name)
	m.deviceLastSeen.DeleteLabelValues(name)
}
