package fc

import "syscall"

// sysProcAttr puts a function process in its own process group (so a timeout
// kills everything it started) and has the kernel kill it if the thread that
// started it dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
