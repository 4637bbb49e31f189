//go:build soak

package reliability

import (
	"testing"
	"time"
)

// TestSoak is the full soak: 1,000 simulated devices for 10 minutes once converged (make soak).
func TestSoak(t *testing.T) {
	runSoak(t, soakSpec{prefix: "soak-", devices: 1000, duration: 10 * time.Minute, every: 10 * time.Second})
}
