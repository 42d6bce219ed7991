package retry

import (
	"context"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Policy bounds a retry loop. The zero value is replaced by DefaultPolicy's values field by field.
type Policy struct {
	// InitialInterval is the first backoff; later ones grow by 2x with ±50% jitter.
	InitialInterval time.Duration
	// MaxInterval caps one backoff.
	MaxInterval time.Duration
	// MaxAttempts bounds the number of calls, the first one included.
	MaxAttempts int
	// MaxRetryAfter caps a server's Retry-After hint, so a hostile or confused server cannot park
	// the caller for long.
	MaxRetryAfter time.Duration
	// Timer waits between attempts. Nil means real time (a new timer per loop); tests pass an
	// instant timer, which every loop using the policy shares: it must be safe for concurrent use.
	Timer backoff.Timer
}

// DefaultPolicy is the policy used for Kubernetes API calls: 8 attempts, 200ms doubling to 15s.
func DefaultPolicy() Policy {
	return Policy{InitialInterval: 200 * time.Millisecond, MaxInterval: 15 * time.Second, MaxAttempts: 8, MaxRetryAfter: time.Minute}
}

func (p Policy) withDefaults() Policy {
	d := DefaultPolicy()
	if p.InitialInterval <= 0 {
		p.InitialInterval = d.InitialInterval
	}
	if p.MaxInterval <= 0 {
		p.MaxInterval = d.MaxInterval
	}
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.MaxRetryAfter <= 0 {
		p.MaxRetryAfter = d.MaxRetryAfter
	}
	return p
}

// Notify is told about each retry: the error that caused it, its class and the wait before the next
// attempt. It must be safe for concurrent use when one Notify serves several loops.
type Notify func(err error, wait time.Duration)

// ExhaustedError reports that every attempt failed with a retriable error.
type ExhaustedError struct {
	// Attempts is the number of calls made.
	Attempts int
	// Err is the last error.
	Err error
}

// Error implements error.
func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("gave up after %d attempts: %v", e.Attempts, e.Err)
}

// Unwrap returns the last error.
func (e *ExhaustedError) Unwrap() error { return e.Err }

// Do calls op until it succeeds, fails with an error that is not Retriable, the attempts run out
// (an *ExhaustedError) or ctx ends. A Retry-After hint lengthens the wait to what the server asked
// for (capped by MaxRetryAfter). Non-retriable errors are returned unchanged so callers can
// Classify them.
func Do(ctx context.Context, p Policy, op func(ctx context.Context) error, notify Notify) error {
	p = p.withDefaults()
	expo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(p.InitialInterval),
		backoff.WithMaxInterval(p.MaxInterval),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMultiplier(2),
		backoff.WithMaxElapsedTime(0),
	)
	hinted := &hintBackOff{next: expo, max: p.MaxRetryAfter}
	b := backoff.WithContext(backoff.WithMaxRetries(hinted, uint64(p.MaxAttempts-1)), ctx)
	attempts := 0
	var last error
	err := backoff.RetryNotifyWithTimer(func() error {
		attempts++
		err := op(ctx)
		last = err
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return backoff.Permanent(err)
		}
		if Classify(err) != Retriable {
			return backoff.Permanent(err)
		}
		hinted.hint, _ = RetryAfter(err)
		return err
	}, b, func(err error, wait time.Duration) {
		if notify != nil {
			notify(err, wait)
		}
	}, p.Timer)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && last != nil && Classify(last) == Retriable {
		return fmt.Errorf("retry stopped: %w (last error: %v)", context.Cause(ctx), last)
	}
	if Classify(err) == Retriable {
		return &ExhaustedError{Attempts: attempts, Err: err}
	}
	return err
}

// hintBackOff waits at least as long as the server's last Retry-After hint.
type hintBackOff struct {
	next backoff.BackOff
	hint time.Duration
	max  time.Duration
}

func (h *hintBackOff) Reset() { h.next.Reset(); h.hint = 0 }

func (h *hintBackOff) NextBackOff() time.Duration {
	d := h.next.NextBackOff()
	if d == backoff.Stop {
		return d
	}
	if hint := min(h.hint, h.max); hint > d {
		d = hint
	}
	h.hint = 0
	return d
}
