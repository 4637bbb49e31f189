package controlplanetest

import (
	"fmt"
	"os"
	"path/filepath"
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
	skipShort(t)
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
	skipShort(t)
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

func TestSharedFailsEveryGetWithoutBinaries(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	setupRan := false
	s := &Shared{Config: controlplane.Config{BinDir: dir}, AuditPolicy: "rules: []", Setup: func(*controlplane.ControlPlane) error {
		setupRan = true
		return nil
	}}
	want := "kube-apiserver not found in " + dir + ": run `make controlplane`"
	for i := range 2 {
		rec := &recordingTB{TB: t}
		rec.run(func() { s.Get(rec) })
		if rec.skipped || !strings.Contains(rec.fatal, want) {
			t.Errorf("Get %d: got fatal %q (skipped %v), want a failure containing %q", i+1, rec.fatal, rec.skipped, want)
		}
	}
	if setupRan {
		t.Errorf("got Setup run for a control plane that never started, want not")
	}
	_ = os.RemoveAll(s.dir)
}

func TestSharedStartsOnceAndRunsSetupOnce(t *testing.T) {
	skipShort(t)
	setups := 0
	s := &Shared{AuditPolicy: "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n", Setup: func(*controlplane.ControlPlane) error {
		setups++
		return nil
	}}
	a, b := s.Get(t), s.Get(t)
	defer func() { _ = a.Stop() }()
	if a != b || setups != 1 {
		t.Errorf("got %p and %p with %d setups, want one control plane set up once", a, b, setups)
	}
	if fi, err := os.Stat(s.AuditLog()); err != nil || fi.Size() == 0 {
		t.Errorf("audit log %s: got %v, want requests logged", s.AuditLog(), err)
	}
	_ = os.RemoveAll(filepath.Dir(s.AuditLog()))
}
