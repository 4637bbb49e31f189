package device

import (
	"sync"
	"time"
)

// Status is a snapshot of what an Agent has done and how it stands, for a
// display or a fleet simulator's report.
type Status struct {
	Name       string
	Registered bool   // the Node exists (created, or found and patched)
	NodeUID    string // metadata.uid of the Node, once registered
	// Ready is true while the node is registered and its Lease was renewed
	// within the lease duration: what the node lifecycle controller judges.
	Ready        bool
	LastError    string    // the most recent failure, if any
	LastErrorAt  time.Time // when it happened
	Requests     uint64    // HTTP requests sent, watches included
	Errors       map[string]uint64
	LeaseRenewed time.Time // last successful renewal
	// LeaseRenewals counts successful renewals (creation included);
	// LeaseLate counts those that came more than 1.5 lease intervals after
	// the previous one. LeaseMaxGap is the longest gap seen.
	LeaseRenewals uint64
	LeaseLate     uint64
	LeaseMaxGap   time.Duration
	StatusPatches uint64 // node status patches accepted
	Lists         uint64 // pod lists done (1 + re-lists)
	Watches       uint64 // pod watches opened
	PodEvents     uint64 // watch events received, bookmarks included
	Pods          int    // pods bound to this node that the agent tracks
	Containers    int    // containers currently running
}

// stats is the mutable side of Status, shared by the agent's goroutines.
type stats struct {
	mu sync.Mutex
	s  Status
}

func (st *stats) update(fn func(s *Status)) {
	st.mu.Lock()
	fn(&st.s)
	st.mu.Unlock()
}

func (st *stats) request() { st.update(func(s *Status) { s.Requests++ }) }

func (st *stats) fail(kind string) {
	st.update(func(s *Status) {
		if s.Errors == nil {
			s.Errors = make(map[string]uint64)
		}
		s.Errors[kind]++
	})
}

func (st *stats) lastError(err error, at time.Time) {
	st.update(func(s *Status) {
		s.LastError = err.Error()
		s.LastErrorAt = at
	})
}

// leaseRenewed records a successful renewal at t.
func (st *stats) leaseRenewed(t time.Time, interval time.Duration) {
	st.update(func(s *Status) {
		if !s.LeaseRenewed.IsZero() {
			gap := t.Sub(s.LeaseRenewed)
			if gap > s.LeaseMaxGap {
				s.LeaseMaxGap = gap
			}
			if gap > interval+interval/2 {
				s.LeaseLate++
			}
		}
		s.LeaseRenewed = t
		s.LeaseRenewals++
	})
}

func (st *stats) snapshot(now time.Time, leaseDuration time.Duration) Status {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.s
	s.Errors = make(map[string]uint64, len(st.s.Errors))
	for k, v := range st.s.Errors {
		s.Errors[k] = v
	}
	s.Ready = s.Registered && !s.LeaseRenewed.IsZero() && now.Sub(s.LeaseRenewed) < leaseDuration
	return s
}
