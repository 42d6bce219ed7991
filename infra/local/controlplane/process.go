package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// stopGrace is how long a process has to exit after SIGTERM before it gets SIGKILL.
const stopGrace = 10 * time.Second

// process is one child process (etcd or kube-apiserver) in its own process group.
type process struct {
	name     string
	cmd      *exec.Cmd
	log      *procLog
	cancel   context.CancelFunc
	stopping atomic.Bool
	done     chan struct{} // closed once the process has exited and been reaped
	waitErr  error         // valid after done is closed
}

// startProcess starts path with args, its output going to log. The process outlives no
// stop call: stop sends SIGTERM to its group, then SIGKILL after stopGrace. On Linux the
// process also gets SIGKILL if the test binary dies.
func startProcess(name, path string, args, env []string, dir string, log *procLog) (*process, error) {
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return signalGroup(cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = stopGrace
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: log, cancel: cancel, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		// Anything the process left in its group goes too.
		_ = signalGroup(cmd.Process.Pid, syscall.SIGKILL)
		close(p.done)
	}()
	return p, nil
}

// pid returns the process id, which is also its process group id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes how the process exited, with the tail of its log. Call it after done.
func (p *process) exitError() error {
	return fmt.Errorf("%s exited: %v\n%s", p.name, p.waitErr, p.log.tailText(30))
}

// stop terminates the process and waits until it has been reaped. It returns an error when the
// process had already exited before stop was called (a crash), and is safe to call again.
func (p *process) stop() error {
	crashed := p.exited() && !p.stopping.Load()
	p.stopping.Store(true)
	p.cancel()
	<-p.done
	if crashed {
		return fmt.Errorf("%s exited before it was stopped: %v", p.name, p.waitErr)
	}
	return nil
}

// signalGroup sends sig to the process group pgid; a group that is already gone is not an error.
func signalGroup(pgid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal process group %d: %w", pgid, err)
	}
	return nil
}

// procLog is the output of one process: complete lines go to a shared sink (with an optional
// prefix) and the last lines are kept for error messages. It is safe for concurrent use.
type procLog struct {
	prefix string
	sink   io.Writer
	sinkMu *sync.Mutex // shared by every procLog writing to the same sink

	mu      sync.Mutex
	partial []byte
	tail    []string // ring of the last maxTail lines
	next    int
}

const (
	maxTail     = 200
	maxLineSize = 16 << 10
)

func newProcLog(prefix string, sink io.Writer, sinkMu *sync.Mutex) *procLog {
	return &procLog{prefix: prefix, sink: sink, sinkMu: sinkMu}
}

// Write implements io.Writer. It never fails: a broken sink must not kill the process.
func (l *procLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			if len(l.partial) > maxLineSize {
				l.line(string(l.partial))
				l.partial = l.partial[:0]
			}
			break
		}
		l.line(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

// line records one complete line; l.mu is held.
func (l *procLog) line(s string) {
	if len(l.tail) < maxTail {
		l.tail = append(l.tail, s)
	} else {
		l.tail[l.next] = s
		l.next = (l.next + 1) % maxTail
	}
	if l.sink != nil {
		l.sinkMu.Lock()
		_, _ = io.WriteString(l.sink, l.prefix+s+"\n")
		l.sinkMu.Unlock()
	}
}

// lines returns up to n of the last complete lines, oldest first.
func (l *procLog) lines(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	all := make([]string, 0, len(l.tail)+1)
	all = append(all, l.tail[l.next:]...)
	all = append(all, l.tail[:l.next]...)
	if len(l.partial) > 0 {
		all = append(all, string(l.partial))
	}
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}

// tailText returns the last n lines as an indented block for an error message.
func (l *procLog) tailText(n int) string {
	lines := l.lines(n)
	if len(lines) == 0 {
		return "    (no output)"
	}
	return "    " + strings.Join(lines, "\n    ")
}

// contains reports whether any kept line contains s.
func (l *procLog) contains(s string) bool {
	for _, line := range l.lines(maxTail) {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// openLogFile opens path for appending process output.
func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log file: %w", err)
	}
	return f, nil
}
