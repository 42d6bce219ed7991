//go:build unix && !linux

package fc

import "syscall"

// sysProcAttr puts a function process in its own process group (so a timeout
// kills everything it started).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
