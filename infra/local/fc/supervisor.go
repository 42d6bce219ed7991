package fc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Error types the twin reports for failures that are not the handler's own.
const (
	// ErrorTypeTimeout marks an invocation that overran its timeout; its
	// process was killed.
	ErrorTypeTimeout = "FunctionTimeout"
	// ErrorTypeProcessExited marks an invocation whose process exited (a panic
	// in a goroutine, os.Exit, a failed start-up check) before answering.
	ErrorTypeProcessExited = "ProcessExited"
)

// Defaults of Function and Options fields left zero.
const (
	// DefaultAsyncRetries is FC's default asyncInvokeConfig.maxAsyncRetryAttempts.
	DefaultAsyncRetries = 3
	// MaxAsyncRetries is the largest maxAsyncRetryAttempts FC accepts.
	MaxAsyncRetries = 8
	// DefaultMaxInstances bounds the processes of one function.
	DefaultMaxInstances = 8
	// DefaultStartTimeout is how long a new process may take to ask for work.
	DefaultStartTimeout = 15 * time.Second
	// DefaultAsyncRetryDelay separates the attempts of an async invocation.
	DefaultAsyncRetryDelay = time.Second
)

// Function is one function as s.yaml declares it.
type Function struct {
	// Name is functionName.
	Name string
	// Handler is the handler ("main" for go1), reported in the FC context.
	Handler string
	// Binary is the executable: for go1 the code directory joined with the
	// handler. The process runs in its directory.
	Binary string
	// Env is environmentVariables. Names may not start with FC_.
	Env map[string]string
	// Timeout is the function's timeout (s.yaml timeout, in seconds there);
	// required.
	Timeout time.Duration
	// MemoryMB is memorySize, reported in the FC context.
	MemoryMB int
	// AsyncRetries is asyncInvokeConfig.maxAsyncRetryAttempts (0..8); nil
	// means DefaultAsyncRetries.
	AsyncRetries *int
	// MaxInstances bounds concurrent processes (0 means DefaultMaxInstances);
	// an invocation waits for a free instance when all are busy.
	MaxInstances int
}

// Options configures a Supervisor. The zero value is usable.
type Options struct {
	// Region and AccountID are FC_REGION / FC_ACCOUNT_ID and the FC context's.
	Region    string
	AccountID string
	// Credentials are the role's temporary credentials: in every FC context
	// and as ALIBABA_CLOUD_* variables.
	Credentials Credentials
	// Clock drives deadlines and async retry delays; nil means the real clock.
	// The function processes read the deadline header with their own clock,
	// so anything but the real clock is only for tests without processes.
	Clock clock.Clock
	// StartTimeout bounds how long a new process may take to call next.
	StartTimeout time.Duration
	// AsyncRetryDelay separates the attempts of an async invocation.
	AsyncRetryDelay time.Duration
	// LogOutput, when set, receives every line a function prints, prefixed
	// with "[name] ".
	LogOutput io.Writer
	// LogLimit bounds the output kept per function (0 means DefaultLogLimit).
	LogLimit int
	// OnResult, when set, is called after every invocation attempt.
	OnResult func(function string, r Result)
}

// Result is the outcome of one invocation.
type Result struct {
	// RequestID is the invocation's x-fc-request-id.
	RequestID string
	// Body is the function's response (nil after an error).
	Body []byte
	// Error is the function's error, a timeout or a crash; nil on success.
	Error *FunctionError
	// Duration runs from dispatch to answer (or to the kill).
	Duration time.Duration
	// TimedOut is true when the function overran its timeout and was killed.
	TimedOut bool
	// RetryCount is the x-fc-retry-count the attempt ran with.
	RetryCount int
}

// function is a registered Function with its instance pool.
type function struct {
	Function
	dir     string
	retries int
	logs    *logBuffer

	mu    sync.Mutex
	idle  []*instance
	count int           // running instances, idle or busy
	freed chan struct{} // closed and replaced when an instance is released
}

// Supervisor runs function binaries the way Function Compute does: one
// invocation per process at a time, more processes under concurrency, a
// deadline per invocation after which the process is killed, async
// invocations retried. Create it with NewSupervisor and stop it with Close;
// it is safe for concurrent use.
type Supervisor struct {
	opts   Options
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	fns    map[string]*function
	closed bool
}

// NewSupervisor returns a Supervisor without functions.
func NewSupervisor(opts Options) *Supervisor {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.AsyncRetryDelay <= 0 {
		opts.AsyncRetryDelay = DefaultAsyncRetryDelay
	}
	if opts.LogLimit <= 0 {
		opts.LogLimit = DefaultLogLimit
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Supervisor{opts: opts, ctx: ctx, cancel: cancel, fns: map[string]*function{}}
}

// Errors of the Supervisor (the twin's faults, not the function's).
var (
	// ErrUnknownFunction reports an invocation of a function never registered.
	ErrUnknownFunction = errors.New("unknown function")
	// ErrSupervisorClosed reports a call after Close.
	ErrSupervisorClosed = errors.New("supervisor closed")
)

// Register validates fn and adds it. Processes start on first invocation.
func (s *Supervisor) Register(fn Function) error {
	var problems []string
	if fn.Name == "" {
		problems = append(problems, "name is required")
	}
	if fn.Binary == "" {
		problems = append(problems, "binary is required")
	}
	if fn.Timeout <= 0 {
		problems = append(problems, "timeout must be positive")
	}
	for k := range fn.Env {
		if strings.HasPrefix(k, "FC_") || k == "" || strings.ContainsAny(k, "=\x00") {
			problems = append(problems, fmt.Sprintf("environment variable %q: names may not be empty, contain '=' or start with FC_", k))
		}
	}
	retries := DefaultAsyncRetries
	if fn.AsyncRetries != nil {
		retries = *fn.AsyncRetries
		if retries < 0 || retries > MaxAsyncRetries {
			problems = append(problems, fmt.Sprintf("async retries %d: want 0..%d", retries, MaxAsyncRetries))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("register function %q: %s", fn.Name, strings.Join(problems, "; "))
	}
	if fn.MaxInstances <= 0 {
		fn.MaxInstances = DefaultMaxInstances
	}
	fn.Env = copyEnv(fn.Env)
	abs, err := filepath.Abs(fn.Binary)
	if err != nil {
		return fmt.Errorf("register function %q: %w", fn.Name, err)
	}
	fn.Binary = abs
	f := &function{
		Function: fn,
		dir:      filepath.Dir(abs),
		retries:  retries,
		logs:     newLogBuffer(s.opts.LogLimit, s.opts.LogOutput, "["+fn.Name+"] "),
		freed:    make(chan struct{}),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("register function %q: %w", fn.Name, ErrSupervisorClosed)
	}
	if _, dup := s.fns[fn.Name]; dup {
		return fmt.Errorf("register function %q: already registered", fn.Name)
	}
	s.fns[fn.Name] = f
	return nil
}

func copyEnv(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (s *Supervisor) lookup(name string) (*function, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrSupervisorClosed
	}
	f, ok := s.fns[name]
	if !ok {
		return nil, fmt.Errorf("function %q: %w", name, ErrUnknownFunction)
	}
	return f, nil
}

// Invoke runs one synchronous invocation of the named function with payload
// and waits for its result. A handler error, a panic, a timeout (the process
// is then killed; the next invocation starts a fresh one) and a crashed
// process are all reported in Result.Error; the error return is for the
// twin's own faults: unknown function, a binary that cannot start or never
// asks for work, Close, or ctx ending first (the invocation then goes on
// until it answers or its deadline kills it).
func (s *Supervisor) Invoke(ctx context.Context, name string, payload []byte) (Result, error) {
	return s.invoke(ctx, name, payload, 0)
}

func (s *Supervisor) invoke(ctx context.Context, name string, payload []byte, retryCount int) (Result, error) {
	f, err := s.lookup(name)
	if err != nil {
		return Result{}, fmt.Errorf("invoke: %w", err)
	}
	type outcome struct {
		r   Result
		err error
	}
	ch := make(chan outcome, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		r, err := s.run(f, payload, retryCount)
		if err == nil && s.opts.OnResult != nil {
			s.opts.OnResult(f.Name, r)
		}
		ch <- outcome{r, err}
	}()
	select {
	case o := <-ch:
		if o.err != nil {
			return o.r, fmt.Errorf("invoke %s: %w", name, o.err)
		}
		return o.r, nil
	case <-ctx.Done():
		return Result{}, fmt.Errorf("invoke %s: %w", name, ctx.Err())
	}
}

// run performs one invocation on a free instance. It never outlives the
// invocation's deadline by more than a kill.
func (s *Supervisor) run(f *function, payload []byte, retryCount int) (Result, error) {
	inst, err := s.acquire(f)
	if err != nil {
		return Result{}, err
	}
	id, err := newRequestID()
	if err != nil {
		s.release(f, inst, false)
		return Result{}, err
	}
	inv := Invocation{
		RequestID: id, Payload: payload, Timeout: f.Timeout,
		FunctionName: f.Name, Handler: f.Handler, MemoryMB: f.MemoryMB,
		Region: s.opts.Region, AccountID: s.opts.AccountID, Credentials: s.opts.Credentials,
		RetryCount: retryCount,
	}
	res := Result{RequestID: id, RetryCount: retryCount}

	// Hand the invocation over; a process that exits or never asks for work
	// fails the dispatch.
	dctx, dcancel := context.WithCancel(s.ctx)
	startTimer := s.opts.Clock.NewTimer(s.opts.StartTimeout)
	go func() {
		select {
		case <-inst.exited:
		case <-startTimer.C():
		case <-dctx.Done():
		}
		dcancel()
	}()
	call, err := inst.api.Dispatch(dctx, inv)
	startTimer.Stop()
	dcancel()
	if err != nil {
		exited := !inst.alive()
		s.release(f, inst, false)
		if exited {
			res.Error = &FunctionError{Type: ErrorTypeProcessExited,
				Message: "process exited before taking the invocation (" + inst.exitDescription() + ")"}
			return res, nil
		}
		if s.ctx.Err() != nil {
			return Result{}, ErrSupervisorClosed
		}
		return Result{}, fmt.Errorf("process did not ask for work within %s: %w", s.opts.StartTimeout, err)
	}
	started := call.Deadline.Add(-inv.Timeout) // the dispatch time
	deadline := s.opts.Clock.NewTimer(call.Deadline.Sub(s.opts.Clock.Now()))
	defer deadline.Stop()

	select {
	case <-call.Done():
		res.Duration = s.opts.Clock.Since(started)
		r := call.Response()
		res.Body, res.Error = r.Body, r.Error
		s.release(f, inst, true)
	case <-deadline.C():
		res.Duration = s.opts.Clock.Since(started)
		inst.api.Abandon(call)
		s.release(f, inst, false)
		res.TimedOut = true
		res.Error = &FunctionError{Type: ErrorTypeTimeout,
			Message: fmt.Sprintf("Function timed out after %s; the instance was killed", f.Timeout)}
	case <-inst.exited:
		res.Duration = s.opts.Clock.Since(started)
		inst.api.Abandon(call)
		s.release(f, inst, false)
		res.Error = &FunctionError{Type: ErrorTypeProcessExited,
			Message: "Process exited unexpectedly before completing request (" + inst.exitDescription() + ")"}
	case <-s.ctx.Done():
		inst.api.Abandon(call)
		s.release(f, inst, false)
		return Result{}, ErrSupervisorClosed
	}
	return res, nil
}

// acquire returns an idle live instance, or starts one, or waits for one to
// be released.
func (s *Supervisor) acquire(f *function) (*instance, error) {
	for {
		f.mu.Lock()
		for len(f.idle) > 0 {
			inst := f.idle[len(f.idle)-1]
			f.idle = f.idle[:len(f.idle)-1]
			if inst.alive() {
				f.mu.Unlock()
				return inst, nil
			}
			f.count--
			inst.kill()
		}
		if f.count < f.MaxInstances {
			f.count++
			f.mu.Unlock()
			inst, err := s.startInstance(f)
			if err != nil {
				f.mu.Lock()
				f.count--
				f.mu.Unlock()
				return nil, err
			}
			return inst, nil
		}
		freed := f.freed
		f.mu.Unlock()
		select {
		case <-freed:
		case <-s.ctx.Done():
			return nil, ErrSupervisorClosed
		}
	}
}

// release returns a healthy instance to the pool, or kills it.
func (s *Supervisor) release(f *function, inst *instance, healthy bool) {
	keep := healthy && inst.alive() && s.ctx.Err() == nil
	if !keep {
		inst.kill()
	}
	f.mu.Lock()
	if keep {
		f.idle = append(f.idle, inst)
	} else {
		f.count--
	}
	close(f.freed)
	f.freed = make(chan struct{})
	f.mu.Unlock()
}

// AsyncInvocation is an asynchronous invocation: the first attempt and the
// retries after failed ones.
type AsyncInvocation struct {
	done     chan struct{}
	attempts []Result
	err      error
}

// Done is closed when the last attempt has finished.
func (a *AsyncInvocation) Done() <-chan struct{} { return a.done }

// Wait waits for the invocation to finish and returns every attempt in order
// (the last one decides: success, or retries exhausted). The error is the
// twin's own fault, or ctx ending first.
func (a *AsyncInvocation) Wait(ctx context.Context) ([]Result, error) {
	select {
	case <-a.done:
		return a.attempts, a.err
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for async invocation: %w", ctx.Err())
	}
}

// InvokeAsync starts an asynchronous invocation, as FC does for timer
// triggers and async EventBridge targets: an attempt that fails (handler
// error, panic, timeout, crash) is retried after Options.AsyncRetryDelay, up
// to the function's AsyncRetries times, with x-fc-retry-count counting up.
func (s *Supervisor) InvokeAsync(name string, payload []byte) (*AsyncInvocation, error) {
	f, err := s.lookup(name)
	if err != nil {
		return nil, fmt.Errorf("invoke async: %w", err)
	}
	a := &AsyncInvocation{done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(a.done)
		for attempt := 0; ; attempt++ {
			r, err := s.run(f, payload, attempt)
			if err != nil {
				a.err = fmt.Errorf("invoke async %s (attempt %d): %w", name, attempt+1, err)
				return
			}
			if s.opts.OnResult != nil {
				s.opts.OnResult(f.Name, r)
			}
			a.attempts = append(a.attempts, r)
			if r.Error == nil || attempt >= f.retries {
				return
			}
			t := s.opts.Clock.NewTimer(s.opts.AsyncRetryDelay)
			select {
			case <-t.C():
			case <-s.ctx.Done():
				t.Stop()
				a.err = fmt.Errorf("invoke async %s: %w", name, ErrSupervisorClosed)
				return
			}
		}
	}()
	return a, nil
}

// Logs returns what the named function's processes printed on stdout and
// stderr so far (nil for an unknown function) and whether output beyond
// Options.LogLimit was dropped.
func (s *Supervisor) Logs(name string) (out []byte, truncated bool) {
	s.mu.Lock()
	f := s.fns[name]
	s.mu.Unlock()
	if f == nil {
		return nil, false
	}
	return f.logs.bytes()
}

// Instances returns how many processes of the named function are running.
func (s *Supervisor) Instances(name string) int {
	s.mu.Lock()
	f := s.fns[name]
	s.mu.Unlock()
	if f == nil {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count
}

// Close kills every function process, fails invocations in progress with
// ErrSupervisorClosed and waits for the Supervisor's goroutines.
func (s *Supervisor) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	fns := make([]*function, 0, len(s.fns))
	for _, f := range s.fns {
		fns = append(fns, f)
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	for _, f := range fns {
		f.mu.Lock()
		idle := f.idle
		f.idle = nil
		f.count -= len(idle)
		f.mu.Unlock()
		for _, inst := range idle {
			inst.kill()
		}
	}
	return nil
}

func newRequestID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("request id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}
