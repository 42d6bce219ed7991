package fc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"sort"
	"sync"
	"syscall"
	"time"
)

// instance is one running process of a function with its own runtime API
// listener. It runs one invocation at a time (FC's go1 runtime has no
// instance concurrency).
type instance struct {
	api *RuntimeAPI
	srv *http.Server
	cmd *exec.Cmd

	exited  chan struct{} // closed when the process has exited
	exitErr error         // cmd.Wait's error; read after exited is closed

	killOnce sync.Once
}

// startInstance starts fn's binary with FC_RUNTIME_API pointing at a fresh
// runtime API on 127.0.0.1.
func (s *Supervisor) startInstance(fn *function) (*instance, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start %s: runtime API listener: %w", fn.Name, err)
	}
	api := NewRuntimeAPI(s.opts.Clock)
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()

	cmd := exec.Command(fn.Binary)
	cmd.Dir = fn.dir
	cmd.Env = s.environ(fn, ln.Addr().String())
	cmd.Stdout = fn.logs
	cmd.Stderr = fn.logs
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		api.Close()
		_ = srv.Close()
		return nil, fmt.Errorf("start %s: %w", fn.Name, err)
	}
	inst := &instance{api: api, srv: srv, cmd: cmd, exited: make(chan struct{})}
	go func() {
		inst.exitErr = cmd.Wait()
		close(inst.exited)
	}()
	return inst, nil
}

// environ is the process environment: a minimal base, the FC system
// variables, the role's credentials and the function's own variables. Nothing
// is inherited from the supervisor's environment.
func (s *Supervisor) environ(fn *function, apiAddr string) []string {
	env := map[string]string{
		"PATH":              "/usr/local/bin:/usr/bin:/bin",
		"HOME":              "/tmp",
		"FC_RUNTIME_API":    apiAddr,
		"FC_FUNCTION_NAME":  fn.Name,
		"FC_FUNC_CODE_PATH": fn.dir,
		"FC_REGION":         s.opts.Region,
		"FC_ACCOUNT_ID":     s.opts.AccountID,
	}
	if c := s.opts.Credentials; c.AccessKeyID != "" {
		env["ALIBABA_CLOUD_ACCESS_KEY_ID"] = c.AccessKeyID
		env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] = c.AccessKeySecret
		if c.SecurityToken != "" {
			env["ALIBABA_CLOUD_SECURITY_TOKEN"] = c.SecurityToken
		}
	}
	for k, v := range fn.Env {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// alive reports whether the process is still running.
func (i *instance) alive() bool {
	select {
	case <-i.exited:
		return false
	default:
		return true
	}
}

// kill stops the process group at once, waits for the process to be reaped,
// then closes the runtime API (in that order: the SDK retries a failing next
// without pause).
func (i *instance) kill() {
	i.killOnce.Do(func() {
		if i.cmd.Process != nil {
			if err := syscall.Kill(-i.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				_ = i.cmd.Process.Kill()
			}
		}
		<-i.exited
		i.api.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := i.srv.Shutdown(ctx); err != nil {
			_ = i.srv.Close()
		}
	})
}

// exitDescription says how the process ended; call after exited is closed.
func (i *instance) exitDescription() string {
	if i.exitErr == nil {
		return "exit status 0"
	}
	return i.exitErr.Error()
}
