package firstlist

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestWait(t *testing.T) {
	tests := []struct {
		name      string
		failures  int  // lists that fail before one succeeds
		cancel    bool // ctx ends while lists fail
		want      bool
		wantLines []string
	}{
		{name: "first list works", want: true},
		{name: "works after two failures", failures: 2, want: true,
			wantLines: []string{"cannot list", "cannot list", "answers"}},
		{name: "ctx ends", failures: 1 << 30, cancel: true, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			calls := 0
			got := Wait(ctx, Config{
				List: func(context.Context) error {
					calls++
					if calls <= tc.failures {
						if tc.cancel {
							cancel()
						}
						return errors.New("forbidden")
					}
					return nil
				},
				Logger:    slog.New(slog.NewTextHandler(&logs, nil)),
				Failing:   "cannot list",
				Recovered: "answers",
				Attrs:     []any{"namespace", "ns"},
			})
			if got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if logs.Len() == 0 {
				lines = nil
			}
			if tc.cancel {
				// A list that fails because ctx ended is not logged as a failure.
				if len(lines) != 0 {
					t.Fatalf("got %d log lines %q, want none", len(lines), lines)
				}
				return
			}
			if len(lines) != len(tc.wantLines) {
				t.Fatalf("got %d log lines %q, want %d", len(lines), lines, len(tc.wantLines))
			}
			for i, w := range tc.wantLines {
				if !strings.Contains(lines[i], w) {
					t.Errorf("line %d: got %q, want it to contain %q", i, lines[i], w)
				}
			}
			if tc.failures > 0 && !strings.Contains(lines[0], "namespace=ns") || tc.failures > 0 && !strings.Contains(lines[0], "err=forbidden") {
				t.Errorf("got %q, want the attrs and the error on the failing line", lines[0])
			}
		})
	}
}
