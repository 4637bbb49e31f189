package serve

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLimitFor(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		name         string
		configured   int64
		live, stacks uint64
		want         int64
	}{
		{"a small heap keeps the configured limit", 192 * mib, 70 * mib, 10 * mib, 192 * mib},
		{"at half the limit, still the configured limit", 192 * mib, 90 * mib, 12 * mib, 192 * mib},
		{"a live heap near the limit gets twice itself and the stacks", 192 * mib, 180 * mib, 40 * mib, 400 * mib},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := limitFor(c.configured, c.live, c.stacks); got != c.want {
				t.Errorf("got %d MiB, want %d MiB", got/mib, c.want/mib)
			}
		})
	}
}

// The limit follows a live heap that outgrows it, ignores small swings, and returns to the configured
// value; the operator is told once each way.
func TestHeadroomFollowsTheLiveHeap(t *testing.T) {
	const mib = 1 << 20
	var logs bytes.Buffer
	var live uint64
	var applied []int64
	h := &headroom{configured: 192 * mib, current: 192 * mib, read: func() (uint64, uint64) { return live, 0 },
		set: func(v int64) { applied = append(applied, v) }, log: slog.New(slog.NewTextHandler(&logs, nil))}
	steps := []struct {
		live uint64
		want int64 // the limit in force after the check
	}{
		{50 * mib, 192 * mib},  // nothing to do
		{150 * mib, 300 * mib}, // raised
		{155 * mib, 300 * mib}, // within an eighth: left alone
		{200 * mib, 400 * mib}, // raised again
		{60 * mib, 192 * mib},  // back to the configured limit
	}
	for i, s := range steps {
		live = s.live
		h.check()
		if h.current != s.want {
			t.Errorf("step %d (live %d MiB): got limit %d MiB, want %d MiB", i, s.live/mib, h.current/mib, s.want/mib)
		}
	}
	if want := []int64{300 * mib, 400 * mib, 192 * mib}; len(applied) != len(want) || applied[0] != want[0] || applied[1] != want[1] || applied[2] != want[2] {
		t.Errorf("limits applied: got %v, want %v", applied, want)
	}
	if got := strings.Count(logs.String(), "level=WARN"); got != 1 {
		t.Errorf("warnings: got %d, want 1 (when the limit first follows the heap)\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), "back at --memory-limit") {
		t.Errorf("got log %q, want a line when the limit is back", logs.String())
	}
}
