package controlplanetest

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/picogate/picogate/internal/controlplane"
)

// Shared is one control plane for all the tests of a package: starting one costs seconds, so the tests
// share it and keep out of each other's way with their own object names. A package declares one as a
// variable, calls Main from its TestMain, and Get from each test; the control plane starts on the first
// Get, so a run that selects none of the tests needing it never starts it.
type Shared struct {
	// Config is the control plane's configuration. APIServerArgs gets the audit flags when AuditPolicy
	// is set.
	Config controlplane.Config
	// AuditPolicy, if set, is an audit policy (YAML) the API server logs requests by, to AuditLog().
	AuditPolicy string
	// Setup, if set, runs once after the control plane started and before any test gets it: the
	// objects every test of the package expects. An error fails every test that calls Get.
	Setup func(c *controlplane.ControlPlane) error

	once sync.Once
	dir  string
	cp   *controlplane.ControlPlane
	err  error
}

// Main runs the package's tests, then stops the control plane if one was started and removes the audit
// files. Call it from TestMain; the test binary exits with m.Run's code when TestMain returns.
func (s *Shared) Main(m *testing.M) {
	m.Run()
	if s.cp != nil {
		_ = s.cp.Stop()
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// Get returns the control plane, starting it and running Setup on first use. It fails t (never skips)
// when either failed, with the error: for missing binaries that reads "kube-apiserver not found in DIR:
// run `make controlplane`".
func (s *Shared) Get(t testing.TB) *controlplane.ControlPlane {
	t.Helper()
	skipShort(t)
	s.once.Do(func() { s.cp, s.err = s.start() })
	if s.err != nil {
		t.Fatalf("control plane: %v", s.err)
	}
	return s.cp
}

// AuditLog is the API server's audit log file; empty without an AuditPolicy or before the first Get.
func (s *Shared) AuditLog() string {
	if s.dir == "" || s.AuditPolicy == "" {
		return ""
	}
	return filepath.Join(s.dir, "audit.log")
}

func (s *Shared) start() (*controlplane.ControlPlane, error) {
	cfg := s.Config
	if s.AuditPolicy != "" {
		dir, err := os.MkdirTemp("", "picogate-audit-")
		if err != nil {
			return nil, err
		}
		s.dir = dir
		policy := filepath.Join(dir, "audit-policy.yaml")
		if err := os.WriteFile(policy, []byte(s.AuditPolicy), 0o600); err != nil {
			return nil, err
		}
		cfg.APIServerArgs = append([]string{"--audit-policy-file=" + policy, "--audit-log-path=" + s.AuditLog(), "--audit-log-mode=blocking"},
			cfg.APIServerArgs...)
	}
	c, err := controlplane.Start(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	if s.Setup != nil {
		if err := s.Setup(c); err != nil {
			return c, err // Main still stops it
		}
	}
	return c, nil
}
