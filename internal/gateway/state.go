package gateway

import (
	"context"
	"sync"

	"golang.org/x/time/rate"
)

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
	st := &deviceState{
		limiter:     rate.NewLimiter(rate.Limit(s.g.cfg.DeviceRate), s.g.cfg.DeviceBurst),
		rateLimited: s.g.metrics.deviceLimited.WithLabelValues(name),
	}
	s.m.Store(name, st)
	return st
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

// watchHandle is one open watch of a device, so it can be ended from outside the request.
type watchHandle struct{ cancel context.CancelFunc }
