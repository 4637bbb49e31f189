package gateway

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/picogate/picogate/internal/hmacauth"
)

// deviceState is what the gateway keeps per registered device: its rate limiter, its open watches,
// its hmac verifiers and nonces, and its metric handles, resolved once so a request does not look
// labels up.
type deviceState struct {
	limiter     *rate.Limiter
	rateLimited prometheus.Counter
	lastSeen    prometheus.Gauge
	requests    sync.Map // int code → prometheus.Counter (requestsFor)
	openWatches atomic.Int64
	watches     sync.Map // *watchHandle → struct{}: open watches, ended when the device is revoked
	nonces      atomic.Pointer[hmacauth.NonceCache]
	keyed       [2]atomic.Pointer[hmacauth.Keyed] // hmac mode: verifiers of the current and next key
}

// deviceStates holds per-device state for registered devices, created on first request.
type deviceStates struct {
	g  *Gateway
	mu sync.Mutex
	m  sync.Map // name → *deviceState
}

func (s *deviceStates) get(name string) *deviceState {
	if st, ok := s.m.Load(name); ok {
		return st.(*deviceState)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.m.Load(name); ok {
		return st.(*deviceState)
	}
	st := &deviceState{limiter: rate.NewLimiter(rate.Limit(s.g.cfg.DeviceRate), s.g.cfg.DeviceBurst),
		rateLimited: s.g.metrics.discardCounter, lastSeen: s.g.metrics.discardGauge}
	if s.g.metrics.perDevice {
		st.rateLimited, st.lastSeen = s.g.metrics.deviceLimited.WithLabelValues(name), s.g.metrics.deviceLastSeen.WithLabelValues(name)
	}
	s.m.Store(name, st)
	return st
}

// requestsFor is the device's picogate_device_requests_total counter for code, looked up once.
func (st *deviceState) requestsFor(m *metrics, name string, code int) prometheus.Counter {
	if !m.perDevice {
		return m.discardCounter
	}
	if c, ok := st.requests.Load(code); ok {
		return c.(prometheus.Counter)
	}
	c := m.deviceRequests.WithLabelValues(name, strconv.Itoa(code))
	st.requests.Store(code, c)
	return c
}

// changed is called by the registry when a device is rotated, revoked or deleted: its open watches end
// now (the device sees the stream close and must authenticate again), and a deleted device's state and
// metrics are dropped.
func (s *deviceStates) changed(name string, stillRegistered bool) {
	v, ok := s.m.Load(name)
	if !ok {
		return
	}
	st := v.(*deviceState)
	st.watches.Range(func(k, _ any) bool {
		k.(*watchHandle).cancel()
		return true
	})
	if !stillRegistered {
		s.m.Delete(name)
		s.g.metrics.forgetDevice(name)
	}
}

// nonceCache returns the device's cache of signed-request nonces, created on its first signed request
// so token and ip devices carry none.
func (st *deviceState) nonceCache(size int) *hmacauth.NonceCache {
	if c := st.nonces.Load(); c != nil {
		return c
	}
	st.nonces.CompareAndSwap(nil, hmacauth.NewNonceCache(size))
	return st.nonces.Load()
}

// verifier returns the device's signature verifier for key (slot 0 its current key, 1 a rotation's),
// rebuilt when the record's key changes.
func (st *deviceState) verifier(slot int, key []byte) *hmacauth.Keyed {
	if v := st.keyed[slot].Load(); v != nil && v.Matches(key) {
		return v
	}
	v := hmacauth.NewKeyed(key)
	st.keyed[slot].Store(v)
	return v
}

// watchHandle is one open watch of a device, so it can be ended from outside the request.
type watchHandle struct{ cancel context.CancelFunc }
