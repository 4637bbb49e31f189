package bench

import (
	"slices"
	"testing"
)

func TestPprofTop(t *testing.T) {
	out := `File: picogate
Build ID: 18c9b2715e4add0af35c833f590d1ad982548b36
Type: cpu
Time: 2026-12-01 09:34:56 UTC
Duration: 2s, Total samples = 320ms (15.98%)
Showing nodes accounting for 320ms, 100% of 320ms total
      flat  flat%   sum%        cum   cum%
      70ms 21.88% 21.88%       70ms 21.88%  internal/runtime/syscall/linux.Syscall6
      30ms  9.38% 31.25%       30ms  9.38%  runtime.memmove

`
	want := []string{
		"Duration: 2s, Total samples = 320ms (15.98%)",
		"Showing nodes accounting for 320ms, 100% of 320ms total",
		"      flat  flat%   sum%        cum   cum%",
		"      70ms 21.88% 21.88%       70ms 21.88%  internal/runtime/syscall/linux.Syscall6",
		"      30ms  9.38% 31.25%       30ms  9.38%  runtime.memmove",
	}
	if got := pprofTop(out); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
