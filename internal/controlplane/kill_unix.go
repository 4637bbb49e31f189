//go:build unix

package controlplane

import (
	"errors"
	"syscall"
)

// killGroup sends SIGKILL to the process group led by pid. SIGKILL rather than SIGTERM: the
// data is either thrown away or in etcd, which survives a kill, and tests should not wait for
// graceful shutdowns.
func killGroup(pid int) error {
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}
