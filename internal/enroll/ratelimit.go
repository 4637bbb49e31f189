package enroll

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// sourceLimits bounds enrollment requests per source and in total. Enrollment is anonymous, and each
// request costs the API server a few calls, so it has a global bound; but a global bound alone lets one
// address that sends junk lock every real board out. So each source has its own small budget, spent
// first: a source over it is refused without touching the global budget, which one source can then
// use at most at its own rate.
//
// Sources are addresses, IPv6 ones by their /64 (a host picks freely within its /64). The table is
// bounded: when it is full, sources whose budget is whole again are forgotten (a fresh limiter would
// answer the same), at most once a second; if it is still full, a new source is refused until then.
type sourceLimits struct {
	global *rate.Limiter
	rate   rate.Limit
	burst  int
	max    int

	mu        sync.Mutex
	bySource  map[netip.Addr]*rate.Limiter
	lastSweep time.Time
}

func newSourceLimits(globalRate float64, globalBurst int, perRate float64, perBurst, maxSources int) *sourceLimits {
	return &sourceLimits{
		global:   rate.NewLimiter(rate.Limit(globalRate), globalBurst),
		rate:     rate.Limit(perRate),
		burst:    perBurst,
		max:      maxSources,
		bySource: make(map[netip.Addr]*rate.Limiter),
	}
}

// allow spends one request of src's budget and then one of the global budget; it reports whether both
// had one. An invalid src (no address known) shares one budget with every other such request.
func (s *sourceLimits) allow(src netip.Addr, now time.Time) bool {
	key := sourceKey(src)
	s.mu.Lock()
	lim, ok := s.bySource[key]
	if !ok {
		if len(s.bySource) >= s.max {
			s.sweep(now)
		}
		if len(s.bySource) >= s.max {
			s.mu.Unlock()
			return false
		}
		lim = rate.NewLimiter(s.rate, s.burst)
		s.bySource[key] = lim
	}
	s.mu.Unlock()
	if !lim.AllowN(now, 1) {
		return false
	}
	return s.global.AllowN(now, 1)
}

// sweep forgets sources whose budget is whole, at most once a second. Called with s.mu held.
func (s *sourceLimits) sweep(now time.Time) {
	if now.Sub(s.lastSweep) < time.Second {
		return
	}
	s.lastSweep = now
	for k, lim := range s.bySource {
		if lim.TokensAt(now) >= float64(s.burst) {
			delete(s.bySource, k)
		}
	}
}

// sources is how many sources are being tracked (tests).
func (s *sourceLimits) sources() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.bySource)
}

// sourceKey is the address a budget belongs to: an IPv4 address, or an IPv6 address's /64.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}
