package fc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fcfuncBinary is the test function (testdata/fcfunc, a real fc.Start main)
// built once per test binary by TestMain.
var fcfuncBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fcfunc-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fcfuncBinary = filepath.Join(dir, "main")
	build := exec.Command("go", "build", "-o", fcfuncBinary, "./testdata/fcfunc")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build testdata/fcfunc: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var testCreds = Credentials{AccessKeyID: "STS.testAK", AccessKeySecret: "test-secret", SecurityToken: "test-token"}

func newSupervisor(t *testing.T, tweak func(*Options), fns ...Function) *Supervisor {
	t.Helper()
	opts := Options{Region: "cn-hangzhou", AccountID: "5068000000000001", Credentials: testCreds,
		AsyncRetryDelay: 10 * time.Millisecond}
	if tweak != nil {
		tweak(&opts)
	}
	s := NewSupervisor(opts)
	t.Cleanup(func() { _ = s.Close() })
	for _, fn := range fns {
		if err := s.Register(fn); err != nil {
			t.Fatalf("Register: %v", err)
		}
	}
	return s
}

func testFunction(name string, timeout time.Duration) Function {
	return Function{Name: name, Handler: "main", Binary: fcfuncBinary, Timeout: timeout, MemoryMB: 512,
		Env: map[string]string{"CUSTOM_SETTING": "custom-value"}}
}

func invoke(t *testing.T, s *Supervisor, name string, payload string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := s.Invoke(ctx, name, []byte(payload))
	if err != nil {
		t.Fatalf("Invoke(%s): %v", payload, err)
	}
	return r
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func TestInvokeEchoErrorPanic(t *testing.T) {
	s := newSupervisor(t, nil, testFunction("f", 10*time.Second))

	r := invoke(t, s, "f", `{"action":"echo","text":"hi"}`)
	if r.Error != nil || string(r.Body) != `{"action":"echo","text":"hi"}` || r.RequestID == "" || r.TimedOut || r.Duration <= 0 {
		t.Fatalf("echo = %+v (body %s)", r, r.Body)
	}

	r = invoke(t, s, "f", `{"action":"error","text":"bad key"}`)
	if r.Error == nil || r.Error.Message != "handler failed: bad key" || r.Error.Type != "errorString" || r.Body != nil {
		t.Fatalf("error = %+v", r.Error)
	}

	before := decode[fcInfoResult](t, invoke(t, s, "f", `{"action":"context"}`).Body).PID
	r = invoke(t, s, "f", `{"action":"panic","text":"x"}`)
	if r.Error == nil || r.Error.Message != "boom: x" || len(r.Error.StackTrace) == 0 || r.TimedOut {
		t.Fatalf("panic = %+v", r.Error)
	}
	// The SDK recovers a handler panic: the same process serves the next call.
	after := decode[fcInfoResult](t, invoke(t, s, "f", `{"action":"context"}`).Body).PID
	if before != after || s.Instances("f") != 1 {
		t.Fatalf("pid %d -> %d, %d instances", before, after, s.Instances("f"))
	}
}

// fcInfoResult mirrors testdata/fcfunc's fcInfo.
type fcInfoResult struct {
	RequestID      string `json:"requestId"`
	AccessKeyID    string `json:"accessKeyId"`
	HasSecret      bool   `json:"hasSecret"`
	SecurityToken  string `json:"securityToken"`
	FunctionName   string `json:"functionName"`
	Handler        string `json:"handler"`
	Memory         string `json:"memory"`
	Timeout        int    `json:"timeout"`
	Region         string `json:"region"`
	AccountID      string `json:"accountId"`
	RetryCount     int    `json:"retryCount"`
	DeadlineMS     int64  `json:"deadlineMs"`
	EnvRegion      string `json:"envRegion"`
	EnvFunction    string `json:"envFunction"`
	EnvAccessKeyID string `json:"envAccessKeyId"`
	EnvCustom      string `json:"envCustom"`
	EnvLeaked      string `json:"envLeaked"`
	PID            int    `json:"pid"`
}

func TestInvokeFCContext(t *testing.T) {
	t.Setenv("FCFUNC_PARENT_ONLY", "must-not-leak")
	s := newSupervisor(t, nil, testFunction("rekey-rotation", 7*time.Second))
	start := time.Now()
	r := invoke(t, s, "rekey-rotation", `{"action":"context"}`)
	if r.Error != nil {
		t.Fatalf("context: %v", r.Error)
	}
	got := decode[fcInfoResult](t, r.Body)
	want := fcInfoResult{
		RequestID: r.RequestID, AccessKeyID: "STS.testAK", HasSecret: true, SecurityToken: "test-token",
		FunctionName: "rekey-rotation", Handler: "main", Memory: "512", Timeout: 7, Region: "cn-hangzhou",
		AccountID: "5068000000000001", RetryCount: 0, EnvRegion: "cn-hangzhou", EnvFunction: "rekey-rotation",
		EnvAccessKeyID: "STS.testAK", EnvCustom: "custom-value", EnvLeaked: "",
		DeadlineMS: got.DeadlineMS, PID: got.PID,
	}
	if got != want {
		t.Fatalf("FC context\n got %+v\nwant %+v", got, want)
	}
	// The handler's ctx carries the deadline: dispatch time + timeout.
	dl := time.UnixMilli(got.DeadlineMS)
	if dl.Before(start.Add(7*time.Second-time.Second)) || dl.After(time.Now().Add(7*time.Second+time.Second)) {
		t.Fatalf("deadline %v not about 7s after %v", dl, start)
	}
}

func TestInvokeTimeoutKillsAndRestarts(t *testing.T) {
	s := newSupervisor(t, nil, testFunction("slow", time.Second))
	first := decode[fcInfoResult](t, invoke(t, s, "slow", `{"action":"context"}`).Body).PID

	r := invoke(t, s, "slow", `{"action":"sleep","ms":30000}`)
	if !r.TimedOut || r.Error == nil || r.Error.Type != ErrorTypeTimeout {
		t.Fatalf("sleep past deadline = %+v", r)
	}
	if r.Duration < time.Second || r.Duration > 10*time.Second {
		t.Fatalf("timed out after %v, want about 1s", r.Duration)
	}
	// The overrunning process is gone ...
	if err := syscall.Kill(first, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process %d still exists after the timeout (kill 0: %v)", first, err)
	}
	if n := s.Instances("slow"); n != 0 {
		t.Fatalf("%d instances after the kill", n)
	}
	// ... and the next invocation runs in a fresh one.
	r = invoke(t, s, "slow", `{"action":"context"}`)
	if r.Error != nil {
		t.Fatalf("after timeout: %v", r.Error)
	}
	if pid := decode[fcInfoResult](t, r.Body).PID; pid == first {
		t.Fatalf("same pid %d after a kill", pid)
	}
}

func TestInvokeCrashes(t *testing.T) {
	s := newSupervisor(t, nil, testFunction("f", 10*time.Second))
	for _, action := range []string{"exit", "goroutine-panic"} {
		r := invoke(t, s, "f", `{"action":"`+action+`"}`)
		if r.Error == nil || r.Error.Type != ErrorTypeProcessExited || r.TimedOut {
			t.Fatalf("%s = %+v", action, r)
		}
		if r := invoke(t, s, "f", `{"action":"echo"}`); r.Error != nil {
			t.Fatalf("after %s: %v", action, r.Error)
		}
	}
}

func TestInvokeProcessFailsAtStart(t *testing.T) {
	fn := testFunction("broken", 5*time.Second)
	fn.Env["FAIL_AT_START"] = "1"
	s := newSupervisor(t, nil, fn)
	r := invoke(t, s, "broken", `{"action":"echo"}`)
	if r.Error == nil || r.Error.Type != ErrorTypeProcessExited || !strings.Contains(r.Error.Message, "exit status 2") {
		t.Fatalf("start failure = %+v", r.Error)
	}
	logs, _ := s.Logs("broken")
	if !strings.Contains(string(logs), "refusing to start") {
		t.Fatalf("logs = %q", logs)
	}
}

func TestInvokeAsyncRetries(t *testing.T) {
	three, one := 3, 1
	ok := testFunction("ok", 10*time.Second)
	ok.AsyncRetries = &three
	short := testFunction("short", 10*time.Second)
	short.AsyncRetries = &one
	var mu sync.Mutex
	var seen []int
	s := newSupervisor(t, func(o *Options) {
		o.OnResult = func(_ string, r Result) { mu.Lock(); seen = append(seen, r.RetryCount); mu.Unlock() }
	}, ok, short)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	a, err := s.InvokeAsync("ok", []byte(`{"action":"fail-until","n":2}`))
	if err != nil {
		t.Fatal(err)
	}
	attempts, err := a.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(attempts) != 3 || attempts[0].Error == nil || attempts[1].Error == nil || attempts[2].Error != nil ||
		attempts[2].RetryCount != 2 || string(attempts[2].Body) != `{"succeededAt":2}` {
		t.Fatalf("attempts = %+v", attempts)
	}

	a, err = s.InvokeAsync("short", []byte(`{"action":"fail-until","n":5}`))
	if err != nil {
		t.Fatal(err)
	}
	attempts, err = a.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(attempts) != 2 || attempts[1].Error == nil || attempts[1].RetryCount != 1 {
		t.Fatalf("retries exhausted: %+v", attempts)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen) != "[0 1 2 0 1]" {
		t.Fatalf("OnResult saw retry counts %v", seen)
	}
}

func TestConcurrentInvocationsUseSeparateInstances(t *testing.T) {
	parallel := testFunction("parallel", 20*time.Second)
	parallel.MaxInstances = 3
	serial := testFunction("serial", 20*time.Second)
	serial.MaxInstances = 1
	s := newSupervisor(t, nil, parallel, serial)

	pids := func(name string) map[int]bool {
		var mu sync.Mutex
		out := map[int]bool{}
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := invoke(t, s, name, `{"action":"sleep","ms":700}`)
				if r.Error != nil {
					t.Errorf("%s: %v", name, r.Error)
					return
				}
				mu.Lock()
				out[decode[map[string]int](t, r.Body)["pid"]] = true
				mu.Unlock()
			}()
		}
		wg.Wait()
		return out
	}
	if got := pids("parallel"); len(got) != 3 {
		t.Fatalf("parallel: %d distinct processes, want 3", len(got))
	}
	if got := pids("serial"); len(got) != 1 {
		t.Fatalf("serial: %d distinct processes, want 1", len(got))
	}
}

func TestLogsCaptured(t *testing.T) {
	var mu sync.Mutex
	var tee bytes.Buffer
	s := newSupervisor(t, func(o *Options) { o.LogOutput = lockedWriter{&mu, &tee} }, testFunction("chatty", 10*time.Second))
	r := invoke(t, s, "chatty", `{"action":"print","text":"hello-log"}`)
	if r.Error != nil {
		t.Fatal(r.Error)
	}
	// The SDK prints its end line after posting the answer: poll briefly.
	want := []string{"fcfunc says: hello-log", "fcfunc warns: hello-log", "FC Invoke Start RequestId: " + r.RequestID,
		"FC Invoke End RequestId: " + r.RequestID}
	deadline := time.Now().Add(5 * time.Second)
	for {
		logs, truncated := s.Logs("chatty")
		missing := ""
		for _, w := range want {
			if !strings.Contains(string(logs), w) {
				missing = w
			}
		}
		if missing == "" && !truncated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("logs lack %q:\n%s", missing, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(tee.String(), "[chatty] fcfunc says: hello-log\n") {
		t.Fatalf("tee = %q", tee.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestRegisterValidates(t *testing.T) {
	s := NewSupervisor(Options{})
	defer s.Close()
	nine := 9
	for _, fn := range []Function{
		{Binary: "x", Timeout: time.Second},
		{Name: "a", Timeout: time.Second},
		{Name: "a", Binary: "x"},
		{Name: "a", Binary: "x", Timeout: time.Second, Env: map[string]string{"FC_REGION": "x"}},
		{Name: "a", Binary: "x", Timeout: time.Second, AsyncRetries: &nine},
	} {
		if err := s.Register(fn); err == nil {
			t.Errorf("Register(%+v) succeeded", fn)
		}
	}
	if err := s.Register(Function{Name: "a", Binary: "x", Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := s.Register(Function{Name: "a", Binary: "x", Timeout: time.Second}); err == nil {
		t.Fatal("duplicate name registered")
	}
	if _, err := s.Invoke(context.Background(), "nope", nil); !errors.Is(err, ErrUnknownFunction) {
		t.Fatalf("unknown function: %v", err)
	}
	if _, err := s.Invoke(context.Background(), "a", nil); err == nil {
		t.Fatal("a missing binary must fail the invocation")
	}
	s.Close()
	if _, err := s.Invoke(context.Background(), "a", nil); !errors.Is(err, ErrSupervisorClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
