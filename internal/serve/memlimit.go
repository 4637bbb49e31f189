package serve

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The soft memory limit (--memory-limit) is where a heap that grows under GOGC 400 is collected. When
// the live heap itself comes near it — agents holding thousands of watches — the collector runs
// continuously: measured with 5,000 agents under the 192 MiB default, two thirds of the gateway's CPU
// went to collecting, its requests queued, and boards timed out. A limit is worth less than the
// gateway's ability to answer, so headroom keeps the limit in force at least at twice the live heap
// (plus the goroutine stacks): the collector then runs as often as under GOGC 100, and the limit
// returns to its configured value once the live heap shrinks.

// headroomInterval is how often the live heap is checked against the limit.
const headroomInterval = 2 * time.Second

// headroom raises the soft memory limit above the configured one while the live heap needs it.
type headroom struct {
	configured int64
	current    int64
	read       func() (live, stacks uint64) // the runtime's figures after the last collection
	set        func(int64)                  // debug.SetMemoryLimit
	log        *slog.Logger
}

func newHeadroom(limit int64, log *slog.Logger) *headroom {
	return &headroom{configured: limit, current: limit, read: readHeap, set: func(v int64) { debug.SetMemoryLimit(v) }, log: log}
}

// limitFor is the limit to apply: the configured one, or twice the live heap plus the stacks when that
// is more.
func limitFor(configured int64, live, stacks uint64) int64 {
	return max(configured, int64(2*live+stacks))
}

// check applies limitFor, when it moved by more than an eighth (so small swings cost nothing).
func (h *headroom) check() {
	live, stacks := h.read()
	want := limitFor(h.configured, live, stacks)
	if diff := want - h.current; diff == 0 || (want != h.configured && max(diff, -diff) < h.current/8) {
		return
	}
	switch {
	case want > h.configured && h.current == h.configured:
		h.log.Warn("the live heap needs more than --memory-limit: the limit follows it at twice the live heap, instead of collecting continuously (raise --memory-limit for this fleet: docs/memory.md)",
			"memory_limit", h.configured, "effective_limit", want)
	case want == h.configured:
		h.log.Info("the soft memory limit is back at --memory-limit", "memory_limit", want)
	}
	h.current = want
	h.set(want)
}

// Run checks the live heap every headroomInterval until ctx ends.
func (h *headroom) Run(ctx context.Context) error {
	t := time.NewTicker(headroomInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			h.check()
		}
	}
}

func readHeap() (live, stacks uint64) {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() == metrics.KindUint64 {
		live = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		stacks = s[1].Value.Uint64()
	}
	return live, stacks
}
