package reencrypt

import (
	"strings"
)

// rateLimiterDeadline is how client-go's client-side rate limiter (golang.org/x/time/rate, with
// --qps) refuses a request whose wait would outlast the caller's deadline: before the deadline,
// without sending it, in an error that wraps no context error.
const rateLimiterDeadline = "would exceed context deadline"

// gaveUp reports whether a failed call failed because the run is ending: its context is done, or
// the rate limiter refused to wait past the run's deadline. The object was then not attempted
// (the request was never sent, or its answer is not wanted), not failed.
func (r *run) gaveUp(err error) bool {
	if r.ctx.Err() != nil {
		return true
	}
	_, hasDeadline := r.ctx.Deadline()
	return hasDeadline && err != nil && strings.Contains(err.Error(), rateLimiterDeadline)
}
