package dashboard

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// Latency buckets: upper bounds 250µs·2^i, i = 0…latBuckets-2, and a last one for everything slower
// (250µs … 65.5s, then +Inf). p99 is read off these, interpolated within its bucket.
const (
	latBuckets = 20
	latBase    = 250 * time.Microsecond
)

func latBucket(d time.Duration) int {
	if d <= latBase {
		return 0
	}
	return min(bits.Len64(uint64((d-1)/latBase)), latBuckets-1)
}

// Status classes of the request-rate chart.
const (
	status2xx = iota // and 1xx
	status3xx
	status4xx
	status5xx
	numStatus
)

// counters are the fleet-wide figures of the interval in progress: atomics, so Record takes no lock.
type counters struct {
	byStatus [numStatus]atomic.Uint64
	upstream atomic.Uint64
	latency  [latBuckets]atomic.Uint64 // non-watch requests only
}

func (c *counters) add(ev *Event, class Class) {
	i := status2xx
	switch {
	case ev.Status >= 500:
		i = status5xx
	case ev.Status >= 400:
		i = status4xx
	case ev.Status >= 300:
		i = status3xx
	}
	c.byStatus[i].Add(1)
	if class == ClassUpstream {
		c.upstream.Add(1)
	}
	if !ev.Watch {
		c.latency[latBucket(ev.Duration)].Add(1)
	}
}

// Point is one interval of the fleet charts.
type Point struct {
	At int64 `json:"t"` // unix milliseconds, the interval's end
	// PerSecond is requests/s by status class: 2xx (with 1xx), 3xx, 4xx, 5xx.
	PerSecond [numStatus]float64 `json:"rps"`
	// P99 is the 99th percentile latency of non-watch requests in milliseconds; 0 with no request.
	P99      float64 `json:"p99"`
	Upstream uint64  `json:"upstream"` // upstream errors in the interval
	// Ready and Nodes are the device Nodes Ready and known at the interval's end; -1 when the
	// Kubernetes view is not available.
	Ready int `json:"ready"`
	Nodes int `json:"nodes"`
}

// history is the ring of the last hour's points.
type history struct {
	cur      counters
	interval time.Duration

	mu     sync.Mutex
	points []Point
	next   int
}

func newHistory(interval time.Duration, n int) *history {
	return &history{interval: interval, points: make([]Point, 0, n)}
}

// rotate closes the interval in progress at now and stores its point.
func (h *history) rotate(now time.Time, ready, nodes int) Point {
	p := Point{At: now.UnixMilli(), Ready: ready, Nodes: nodes}
	secs := h.interval.Seconds()
	for i := range h.cur.byStatus {
		p.PerSecond[i] = float64(h.cur.byStatus[i].Swap(0)) / secs
	}
	p.Upstream = h.cur.upstream.Swap(0)
	var lat [latBuckets]uint64
	for i := range lat {
		lat[i] = h.cur.latency[i].Swap(0)
	}
	p.P99 = percentile(lat[:], 0.99)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.points) < cap(h.points) {
		h.points = append(h.points, p)
	} else {
		h.points[h.next] = p
		h.next = (h.next + 1) % cap(h.points)
	}
	return p
}

// snapshot returns the points oldest first.
func (h *history) snapshot() []Point {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Point, 0, len(h.points))
	out = append(out, h.points[h.next:]...)
	return append(out, h.points[:h.next]...)
}

// percentile reads quantile q off the latency buckets, in milliseconds, interpolating linearly within
// the bucket it falls in.
func percentile(b []uint64, q float64) float64 {
	var total uint64
	for _, n := range b {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var seen float64
	for i, n := range b {
		if n == 0 {
			continue
		}
		if seen+float64(n) >= rank {
			lo, hi := 0.0, float64(latBase<<i)
			if i > 0 {
				lo = float64(latBase << (i - 1))
			}
			if i == len(b)-1 {
				return lo / float64(time.Millisecond) // slower than the last bound: report the bound
			}
			return (lo + (hi-lo)*(rank-seen)/float64(n)) / float64(time.Millisecond)
		}
		seen += float64(n)
	}
	return 0
}
