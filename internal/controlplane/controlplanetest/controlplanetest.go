// Package controlplanetest starts real local control planes for tests: Start gives one test its
// own (cleanup registered, the API server's log shown when the test fails), Shared gives all the
// tests of a package one, and SeedFleet creates the objects devices read. Missing binaries fail the
// test, never skip it; under -short every test needing a control plane is skipped.
package controlplanetest

import (
	"context"
	"testing"

	"github.com/picogate/picogate/internal/controlplane"
)

// logLines is how much of kube-apiserver's log a failed test shows: enough for the last few
// requests and any fatal error.
const logLines = 40

// Start starts a control plane for cfg and stops it when t and its subtests are done. It fails
// t at once when that cannot be done, with Start's error: for missing binaries that reads
// "kube-apiserver not found in DIR: run `make controlplane`". The control plane outlives
// t.Context() on purpose: cleanups registered after this call still reach the API server.
func Start(t testing.TB, cfg controlplane.Config) *controlplane.ControlPlane {
	t.Helper()
	skipShort(t)
	c, err := controlplane.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err) // already says "starting control plane: ..."
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last %d lines of %s:\n%s", logLines, c.LogFile(controlplane.APIServer), c.LogTail(controlplane.APIServer, logLines))
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stopping control plane: %v", err)
		}
	})
	return c
}

// skipShort skips t under -short, the tier without a control plane.
func skipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a control plane (not in -short)")
	}
}
