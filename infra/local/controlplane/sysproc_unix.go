//go:build unix && !linux

package controlplane

import "syscall"

// sysProcAttr puts a child in its own process group. Without Linux's parent-death signal a
// child may outlive a test binary that is killed before Stop runs.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
