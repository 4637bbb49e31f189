//go:build unix && !linux

package controlplane

import "syscall"

// sysProcAttr puts a child in its own process group, so one signal reaches everything it
// starts. Outside Linux there is no parent-death signal: a crashed test may leave orphans.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
