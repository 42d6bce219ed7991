package fc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// APIVersion is the Function Compute runtime API version in every path.
const APIVersion = "2020-11-11"

// Runtime API paths, relative to http://$FC_RUNTIME_API.
const (
	nextPath     = "/" + APIVersion + "/runtime/invocation/next"
	responsePath = "/" + APIVersion + "/runtime/invocation/{id}/response"
	errorPath    = "/" + APIVersion + "/runtime/invocation/{id}/error"
)

// Headers of a GET next answer, as fc-runtime-go-sdk reads them.
const (
	HeaderRequestID       = "x-fc-request-id"
	HeaderDeadline        = "x-fc-function-deadline" // epoch milliseconds
	HeaderTimeout         = "x-fc-function-timeout"  // seconds
	HeaderAccessKeyID     = "x-fc-access-key-id"
	HeaderAccessKeySecret = "x-fc-access-key-secret"
	HeaderSecurityToken   = "x-fc-security-token"
	HeaderFunctionName    = "x-fc-function-name"
	HeaderFunctionHandler = "x-fc-function-handler"
	HeaderFunctionMemory  = "x-fc-function-memory"
	HeaderRegion          = "x-fc-region"
	HeaderAccountID       = "x-fc-account-id"
	HeaderRetryCount      = "x-fc-retry-count"
)

// MaxResponseBytes bounds the body a function may post back (FC's limit for a
// synchronous invocation is 16 MB).
const MaxResponseBytes = 16 << 20

// Credentials are the temporary credentials of the function's role, handed to
// every invocation (FC context) and set as ALIBABA_CLOUD_* variables.
type Credentials struct {
	AccessKeyID     string
	AccessKeySecret string
	SecurityToken   string
}

// Invocation is one request for a function instance.
type Invocation struct {
	// RequestID is x-fc-request-id; the FC context's RequestID.
	RequestID string
	// Payload is the event, the body of the next answer.
	Payload []byte
	// Timeout is the function's timeout; the deadline is the dispatch time
	// plus Timeout. x-fc-function-timeout carries it in whole seconds (rounded up).
	Timeout time.Duration
	// FunctionName, Handler, MemoryMB, Region, AccountID fill the FC context.
	FunctionName string
	Handler      string
	MemoryMB     int
	Region       string
	AccountID    string
	// Credentials fill the FC context's Credentials.
	Credentials Credentials
	// RetryCount is x-fc-retry-count: 0 for a first attempt.
	RetryCount int
}

// FunctionError is what a function posted to {id}/error (or what the twin
// reports for a timeout or a crashed process).
type FunctionError struct {
	// Message is errorMessage.
	Message string `json:"errorMessage"`
	// Type is errorType: the handler error's Go type name, the panic value's
	// type, or ErrorTypeTimeout / ErrorTypeProcessExited.
	Type string `json:"errorType"`
	// StackTrace is set for a panic.
	StackTrace json.RawMessage `json:"stackTrace,omitempty"`
}

// Error implements error.
func (e *FunctionError) Error() string { return e.Type + ": " + e.Message }

// Response is the outcome of a dispatched invocation.
type Response struct {
	// Body is what the function posted to {id}/response (nil after an error).
	Body []byte
	// Error is set when the function posted to {id}/error.
	Error *FunctionError
}

// Call is an invocation handed to a function instance by a next call.
type Call struct {
	// Invocation is what was handed over.
	Invocation Invocation
	// Deadline is the dispatch time plus the timeout (x-fc-function-deadline).
	Deadline time.Time

	ready    chan struct{} // closed when next took the call (Deadline set)
	done     chan struct{}
	once     sync.Once
	response Response
}

// Done is closed when the function posted its response or error.
func (c *Call) Done() <-chan struct{} { return c.done }

// Response returns the function's answer; valid once Done is closed.
func (c *Call) Response() Response { return c.response }

func (c *Call) finish(r Response) bool {
	finished := false
	c.once.Do(func() {
		c.response = r
		close(c.done)
		finished = true
	})
	return finished
}

// RuntimeAPI serves the Function Compute runtime API of one function
// instance: GET next hands out invocations (several next calls may wait at
// once, as the Go SDK makes them), POST {id}/response and {id}/error complete
// them. Create it with NewRuntimeAPI; it is safe for concurrent use.
type RuntimeAPI struct {
	clock  clock.PassiveClock
	mux    *http.ServeMux
	queue  chan *Call
	closed chan struct{}
	close  sync.Once

	mu       sync.Mutex
	inflight map[string]*Call
}

var _ http.Handler = (*RuntimeAPI)(nil)

// NewRuntimeAPI returns a runtime API whose deadlines are read from clk (nil
// means the real clock).
func NewRuntimeAPI(clk clock.PassiveClock) *RuntimeAPI {
	if clk == nil {
		clk = clock.RealClock{}
	}
	a := &RuntimeAPI{
		clock:    clk,
		mux:      http.NewServeMux(),
		queue:    make(chan *Call),
		closed:   make(chan struct{}),
		inflight: map[string]*Call{},
	}
	a.mux.HandleFunc("GET "+nextPath, a.next)
	a.mux.HandleFunc("POST "+responsePath, a.post(false))
	a.mux.HandleFunc("POST "+errorPath, a.post(true))
	return a
}

// ServeHTTP implements the runtime API.
func (a *RuntimeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// ErrClosed is returned by Dispatch after Close.
var ErrClosed = errors.New("runtime API closed")

// Dispatch waits until a next call takes inv and returns the Call, whose
// Deadline is then set. It fails when ctx ends first or the API is closed.
func (a *RuntimeAPI) Dispatch(ctx context.Context, inv Invocation) (*Call, error) {
	if inv.RequestID == "" {
		return nil, errors.New("dispatch: request id is required")
	}
	c := &Call{Invocation: inv, ready: make(chan struct{}), done: make(chan struct{})}
	a.mu.Lock()
	if _, dup := a.inflight[inv.RequestID]; dup {
		a.mu.Unlock()
		return nil, fmt.Errorf("dispatch %s: request id in use", inv.RequestID)
	}
	a.inflight[inv.RequestID] = c
	a.mu.Unlock()
	select {
	case a.queue <- c:
		<-c.ready
		return c, nil
	case <-ctx.Done():
		a.Abandon(c)
		return nil, fmt.Errorf("dispatch %s: no instance asked for work: %w", inv.RequestID, ctx.Err())
	case <-a.closed:
		a.Abandon(c)
		return nil, fmt.Errorf("dispatch %s: %w", inv.RequestID, ErrClosed)
	}
}

// Abandon forgets a call: a late response or error for it gets 404.
func (a *RuntimeAPI) Abandon(c *Call) {
	a.mu.Lock()
	if a.inflight[c.Invocation.RequestID] == c {
		delete(a.inflight, c.Invocation.RequestID)
	}
	a.mu.Unlock()
}

// Invoke dispatches inv and waits for the function's answer or ctx's end;
// it enforces no deadline of its own (the Supervisor does).
func (a *RuntimeAPI) Invoke(ctx context.Context, inv Invocation) (Response, error) {
	c, err := a.Dispatch(ctx, inv)
	if err != nil {
		return Response{}, err
	}
	select {
	case <-c.Done():
		return c.Response(), nil
	case <-ctx.Done():
		a.Abandon(c)
		return Response{}, fmt.Errorf("invoke %s: %w", inv.RequestID, ctx.Err())
	}
}

// Close makes waiting and future next calls fail with 503 and Dispatch fail
// with ErrClosed. Stop the function process first: the Go SDK retries a
// failing next without pause.
func (a *RuntimeAPI) Close() { a.close.Do(func() { close(a.closed) }) }

func (a *RuntimeAPI) next(w http.ResponseWriter, r *http.Request) {
	var c *Call
	select {
	case c = <-a.queue:
	case <-r.Context().Done():
		return
	case <-a.closed:
		writeAPIError(w, http.StatusServiceUnavailable, "runtime API closed")
		return
	}
	inv := c.Invocation
	now := a.clock.Now()
	c.Deadline = now.Add(inv.Timeout)
	close(c.ready)
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set(HeaderRequestID, inv.RequestID)
	h.Set(HeaderDeadline, strconv.FormatInt(c.Deadline.UnixMilli(), 10))
	h.Set(HeaderTimeout, strconv.Itoa(int(math.Ceil(inv.Timeout.Seconds()))))
	setIf(h, HeaderAccessKeyID, inv.Credentials.AccessKeyID)
	setIf(h, HeaderAccessKeySecret, inv.Credentials.AccessKeySecret)
	setIf(h, HeaderSecurityToken, inv.Credentials.SecurityToken)
	setIf(h, HeaderFunctionName, inv.FunctionName)
	setIf(h, HeaderFunctionHandler, inv.Handler)
	if inv.MemoryMB > 0 {
		h.Set(HeaderFunctionMemory, strconv.Itoa(inv.MemoryMB))
	}
	setIf(h, HeaderRegion, inv.Region)
	setIf(h, HeaderAccountID, inv.AccountID)
	h.Set(HeaderRetryCount, strconv.Itoa(inv.RetryCount))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(inv.Payload)
}

func setIf(h http.Header, k, v string) {
	if v != "" {
		h.Set(k, v)
	}
}

func (a *RuntimeAPI) post(isError bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		a.mu.Lock()
		c := a.inflight[id]
		a.mu.Unlock()
		if c == nil {
			writeAPIError(w, http.StatusNotFound, "unknown or finished request id")
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, MaxResponseBytes+1))
		var resp Response
		switch {
		case err != nil:
			resp.Error = &FunctionError{Type: "RuntimeAPIError", Message: "reading the function's answer: " + err.Error()}
		case len(body) > MaxResponseBytes:
			resp.Error = &FunctionError{Type: "ResponseTooLarge", Message: fmt.Sprintf("the function's answer is over %d bytes", MaxResponseBytes)}
		case isError:
			var fe FunctionError
			if err := json.Unmarshal(body, &fe); err != nil {
				fe = FunctionError{Type: "UnparsableError", Message: string(body)}
			}
			resp.Error = &fe
		default:
			resp.Body = body
		}
		a.Abandon(c)
		c.finish(resp)
		if resp.Error != nil && !isError {
			writeAPIError(w, http.StatusRequestEntityTooLarge, resp.Error.Message)
			return
		}
		w.WriteHeader(http.StatusOK)
	}
}

func writeAPIError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"errorMessage": msg, "errorType": http.StatusText(status)})
}
