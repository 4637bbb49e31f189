package controlplane

import "syscall"

// sysProcAttr puts a child in its own process group, so one signal reaches everything it
// starts, and has the kernel kill it if the thread that started it dies (a panicking test
// binary), so no control plane outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
