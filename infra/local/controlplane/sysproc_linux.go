package controlplane

import "syscall"

// sysProcAttr puts a child in its own process group and has the kernel kill it if the thread
// that started it (in practice, the test binary) dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
