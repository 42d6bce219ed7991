package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// instantTimer fires at once and records every requested wait.
type instantTimer struct {
	c     chan time.Time
	waits []time.Duration
}

func newInstantTimer() *instantTimer { return &instantTimer{c: make(chan time.Time, 1)} }

func (t *instantTimer) C() <-chan time.Time { return t.c }
func (t *instantTimer) Start(d time.Duration) {
	t.waits = append(t.waits, d)
	t.c <- time.Time{}
}
func (t *instantTimer) Stop() {}

var gr = schema.GroupResource{Resource: "secrets"}

type httpStatusErr int

func (e httpStatusErr) Error() string   { return fmt.Sprintf("status %d", int(e)) }
func (e httpStatusErr) HttpStatus() int { return int(e) }

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, OK},
		{"conflict", apierrors.NewConflict(gr, "a", errors.New("changed")), Conflict},
		{"not found", apierrors.NewNotFound(gr, "a"), NotFound},
		{"forbidden", apierrors.NewForbidden(gr, "a", errors.New("no")), Denied},
		{"unauthorized", apierrors.NewUnauthorized("who"), Denied},
		{"too many requests", apierrors.NewTooManyRequests("slow down", 2), Retriable},
		{"service unavailable", apierrors.NewServiceUnavailable("busy"), Retriable},
		{"internal", apierrors.NewInternalError(errors.New("etcd timeout")), Retriable},
		{"server timeout", apierrors.NewServerTimeout(gr, "patch", 1), Retriable},
		{"generic 502", apierrors.NewGenericServerResponse(502, "patch", gr, "a", "", 0, false), Retriable},
		{"invalid", apierrors.NewBadRequest("bad"), Permanent},
		{"wrapped conflict", fmt.Errorf("patch ns/a: %w", apierrors.NewConflict(gr, "a", errors.New("x"))), Conflict},
		{"connection reset", &url.Error{Op: "Patch", URL: "https://x", Err: syscall.ECONNRESET}, Retriable},
		{"connection refused", &url.Error{Op: "Get", URL: "https://x", Err: syscall.ECONNREFUSED}, Retriable},
		{"unexpected eof", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), Retriable},
		{"per-call timeout", &url.Error{Op: "Patch", URL: "https://x", Err: context.DeadlineExceeded}, Retriable},
		{"caller cancelled", fmt.Errorf("list: %w", context.Canceled), Permanent},
		{"sdk 503", httpStatusErr(http.StatusServiceUnavailable), Retriable},
		{"sdk 404", httpStatusErr(http.StatusNotFound), NotFound},
		{"sdk 400", httpStatusErr(http.StatusBadRequest), Permanent},
		{"plain", errors.New("boom"), Permanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.err); got != tt.want {
				t.Fatalf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestDoRetriesTransientThenSucceeds(t *testing.T) {
	timer := newInstantTimer()
	calls, notified := 0, 0
	err := Do(context.Background(), Policy{InitialInterval: 100 * time.Millisecond, MaxInterval: time.Second, MaxAttempts: 5, Timer: timer},
		func(context.Context) error {
			calls++
			if calls < 3 {
				return apierrors.NewServiceUnavailable("busy")
			}
			return nil
		}, func(error, time.Duration) { notified++ })
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if calls != 3 || notified != 2 || len(timer.waits) != 2 {
		t.Fatalf("calls=%d notified=%d waits=%v, want 3, 2, 2 waits", calls, notified, timer.waits)
	}
}

func TestDoBackoffBounds(t *testing.T) {
	timer := newInstantTimer()
	p := Policy{InitialInterval: 100 * time.Millisecond, MaxInterval: 800 * time.Millisecond, MaxAttempts: 8, Timer: timer}
	calls := 0
	err := Do(context.Background(), p, func(context.Context) error {
		calls++
		return apierrors.NewInternalError(errors.New("etcd"))
	}, nil)
	var ex *ExhaustedError
	if !errors.As(err, &ex) || ex.Attempts != 8 || calls != 8 {
		t.Fatalf("err=%v calls=%d, want ExhaustedError after 8 attempts", err, calls)
	}
	if Classify(err) != Retriable {
		t.Fatalf("exhausted error should still classify as retriable, got %v", Classify(err))
	}
	if len(timer.waits) != 7 {
		t.Fatalf("waits=%v, want 7", timer.waits)
	}
	base := p.InitialInterval
	for i, w := range timer.waits {
		lo, hi := time.Duration(float64(base)*0.5), time.Duration(float64(base)*1.5)
		if w < lo || w > hi {
			t.Fatalf("wait %d = %v, want within [%v, %v]", i, w, lo, hi)
		}
		if base = base * 2; base > p.MaxInterval {
			base = p.MaxInterval
		}
	}
}

func TestDoHonoursRetryAfterWithCap(t *testing.T) {
	timer := newInstantTimer()
	calls := 0
	err := Do(context.Background(), Policy{InitialInterval: 10 * time.Millisecond, MaxAttempts: 3, MaxRetryAfter: 5 * time.Second, Timer: timer},
		func(context.Context) error {
			calls++
			switch calls {
			case 1:
				return apierrors.NewTooManyRequests("throttled", 2)
			case 2:
				return apierrors.NewTooManyRequests("throttled", 3600)
			}
			return nil
		}, nil)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if len(timer.waits) != 2 || timer.waits[0] < 2*time.Second || timer.waits[1] != 5*time.Second {
		t.Fatalf("waits=%v, want >=2s then the 5s cap", timer.waits)
	}
}

func TestDoStopsOnPermanentAndDenied(t *testing.T) {
	for _, perm := range []error{apierrors.NewForbidden(gr, "a", errors.New("no")), apierrors.NewBadRequest("bad"), apierrors.NewNotFound(gr, "a")} {
		calls := 0
		err := Do(context.Background(), Policy{Timer: newInstantTimer()}, func(context.Context) error { calls++; return perm }, nil)
		if calls != 1 || !errors.Is(err, perm) {
			t.Fatalf("%v: calls=%d err=%v, want one call and the same error", perm, calls, err)
		}
	}
}

func TestDoStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := Do(ctx, Policy{MaxAttempts: 100, Timer: newInstantTimer()}, func(context.Context) error {
		calls++
		if calls == 2 {
			cancel()
		}
		return apierrors.NewServiceUnavailable("busy")
	}, nil)
	if err == nil || calls != 2 || !errors.Is(err, context.Canceled) {
		t.Fatalf("calls=%d err=%v, want 2 calls and a cancellation error", calls, err)
	}
}
