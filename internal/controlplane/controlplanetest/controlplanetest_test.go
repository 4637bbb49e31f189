package controlplanetest

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/picogate/picogate/internal/controlplane"
)

// recordingTB stands in for a test that uses the helper: it records what the helper reports and
// keeps the cleanups for the caller to run.
type recordingTB struct {
	testing.TB
	failed   bool
	fatal    string
	skipped  bool
	logs     []string
	cleanups []func()
}

func (r *recordingTB) Helper()          {}
func (r *recordingTB) Failed() bool     { return r.failed }
func (r *recordingTB) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recordingTB) Logf(format string, args ...any) {
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}
func (r *recordingTB) Errorf(format string, args ...any) {
	r.failed = true
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}
func (r *recordingTB) Fatal(args ...any) {
	r.failed, r.fatal = true, fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.failed, r.fatal = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recordingTB) Skip(...any)          { r.skipped = true; runtime.Goexit() }
func (r *recordingTB) Skipf(string, ...any) { r.skipped = true; runtime.Goexit() }
func (r *recordingTB) SkipNow()             { r.skipped = true; runtime.Goexit() }

// run calls f in its own goroutine, as the testing package does, so Fatalf can end it.
func (r *recordingTB) run(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

func (r *recordingTB) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func TestStartFailsWithoutBinaries(t *testing.T) {
	dir := t.TempDir()
	rec := &recordingTB{TB: t}
	rec.run(func() { Start(rec, controlplane.Config{BinDir: dir}) })
	if rec.skipped {
		t.Fatalf("got a skip, want a failure")
	}
	want := "kube-apiserver not found in " + dir + ": run `make controlplane`"
	if !strings.Contains(rec.fatal, want) {
		t.Errorf("got fatal %q, want it to contain %q", rec.fatal, want)
	}
	if len(rec.cleanups) != 0 {
		t.Errorf("got %d cleanups registered for a control plane that never started, want 0", len(rec.cleanups))
	}
}

func TestCleanupShowsAPIServerLogOnFailure(t *testing.T) {
	tests := []struct {
		name     string
		failed   bool
		wantLogs bool
	}{
		{"passing test stays quiet", false, false},
		{"failing test shows the log", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recordingTB{TB: t}
			var cp *controlplane.ControlPlane
			rec.run(func() { cp = Start(rec, controlplane.Config{}) })
			if rec.fatal != "" {
				t.Fatalf("Start: %s", rec.fatal)
			}
			logFile := cp.LogFile(controlplane.APIServer)
			rec.failed = tt.failed
			rec.runCleanups()
			shown := strings.Join(rec.logs, "\n")
			// The API server writes well over logLines lines while it starts.
			if got := strings.Contains(shown, logFile) && strings.Count(shown, "\n") >= logLines; got != tt.wantLogs {
				t.Errorf("got API server log shown = %v, want %v; logs:\n%s", got, tt.wantLogs, shown)
			}
			if err := cp.Stop(); err != nil {
				t.Errorf("Stop after cleanup: %v", err)
			}
		})
	}
}
