package bench

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	thousand := make([]int, 1000)
	for i := range thousand {
		thousand[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value", ms(7), 99.9, 7 * time.Millisecond},
		{"median of odd", ms(1, 2, 3), 50, 2 * time.Millisecond},
		{"median of even takes the lower", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p99 of 100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p99.9 of 100 is the max", ms(hundred...), 99.9, 100 * time.Millisecond},
		{"p99.9 of 1000", ms(thousand...), 99.9, 999 * time.Millisecond},
		{"p100 is the max", ms(1, 5, 9), 100, 9 * time.Millisecond},
		{"tiny p is the min", ms(1, 5, 9), 0.001, time.Millisecond},
		{"p0 is nothing", ms(1, 5, 9), 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSummarizeSorts(t *testing.T) {
	in := []time.Duration{5, 1, 4, 2, 3}
	got := Summarize(in)
	if got.P50 != 3 || got.P99 != 5 || got.P999 != 5 || got.N != 5 {
		t.Errorf("got %+v, want p50 3, p99 5, p99.9 5, n 5", got)
	}
	if in[0] != 1 || in[4] != 5 {
		t.Errorf("got %v, want the samples sorted in place", in)
	}
}
