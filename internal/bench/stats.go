package bench

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of sorted: the smallest value
// with at least p% of the values at or below it. It is 0 for no values. Nearest rank never
// interpolates, so a reported p99.9 is a latency some request really had.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 || p <= 0 {
		return 0
	}
	// The epsilon keeps 99.9% of 1000 at rank 999: in floating point 0.999*1000 is a hair above it.
	rank := int(math.Ceil(p*float64(n)/100 - 1e-9))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Latency summarises a set of latencies.
type Latency struct {
	P50, P99, P999 time.Duration
	N              int
}

// Summarize sorts samples in place and returns their percentiles.
func Summarize(samples []time.Duration) Latency {
	slices.Sort(samples)
	return Latency{P50: Percentile(samples, 50), P99: Percentile(samples, 99), P999: Percentile(samples, 99.9), N: len(samples)}
}
