package gateway

import (
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/picogate/picogate/internal/status"
)

// sourceLimit limits requests that carry no device credential — the shared identity and the anonymous
// endpoints (time, enrollment) — per source address, as a device is limited per device: the device rate
// and burst, and at most SourceMaxInFlight at once, watches included (429 with Retry-After beyond).
// One LAN client then cannot take the gateway's capacity from the others.
func (g *Gateway) sourceLimit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if identityFrom(r).kind == deviceIdentity {
			next.ServeHTTP(w, r)
			return
		}
		st, e := g.sources.acquire(clientFrom(r), time.Now())
		if e != nil {
			refuse(w, r, grantFrom(r).rule, e)
			return
		}
		defer g.sources.release(st)
		next.ServeHTTP(w, r)
	})
}

// sources holds the limiter and in-flight count of each source address seen without a device
// credential, at most max of them. A source with nothing in flight and a full bucket is the same as an
// unseen one, so when the map is full such entries are dropped; if none can be, a new source is refused
// (503) until one can.
type sources struct {
	mu          sync.Mutex
	m           map[netip.Addr]*sourceState
	max         int
	maxInFlight int
	rate        rate.Limit
	burst       int
	lastSweep   time.Time
}

type sourceState struct {
	limiter  *rate.Limiter
	inflight int
}

func newSources(max, maxInFlight int, r float64, burst int) *sources {
	return &sources{m: make(map[netip.Addr]*sourceState), max: max, maxInFlight: maxInFlight, rate: rate.Limit(r), burst: burst}
}

func (s *sources) acquire(a netip.Addr, now time.Time) (*sourceState, *status.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.m[a]
	if !ok {
		if len(s.m) >= s.max && !s.sweep(now) {
			return nil, &status.Error{Code: http.StatusServiceUnavailable, Message: "gateway is at its limit of client addresses without a device credential", RetryAfter: retryAfterUnavailable}
		}
		st = &sourceState{limiter: rate.NewLimiter(s.rate, s.burst)}
		s.m[a] = st
	}
	if st.inflight >= s.maxInFlight {
		return nil, &status.Error{Code: http.StatusTooManyRequests, Message: "source " + a.String() + " has " + strconv.Itoa(s.maxInFlight) + " requests in flight, the most a client without a device credential may", RetryAfter: retryAfterUnavailable}
	}
	if retry, ok := takeToken(st.limiter, now); !ok {
		return nil, &status.Error{Code: http.StatusTooManyRequests, Message: "rate limit exceeded for source " + a.String(), RetryAfter: retry}
	}
	st.inflight++
	return st, nil
}

func (s *sources) release(st *sourceState) {
	s.mu.Lock()
	st.inflight--
	s.mu.Unlock()
}

// sweep drops the idle sources, at most once a second (a full map of busy sources would otherwise be
// scanned on every request), and reports whether there is room now.
func (s *sources) sweep(now time.Time) bool {
	if now.Sub(s.lastSweep) >= time.Second {
		s.lastSweep = now
		for a, st := range s.m {
			if st.inflight == 0 && st.limiter.TokensAt(now) >= float64(s.burst) {
				delete(s.m, a)
			}
		}
	}
	return len(s.m) < s.max
}

// len is the number of sources held.
func (s *sources) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
