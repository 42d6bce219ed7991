package pace

import (
	"context"
	"errors"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// OutcomeOf classifies the error of a Kubernetes API call for Release: nil and any answer of the
// server below 500 are Answered; 429 Too Many Requests and timeouts (the server's 504 or a call
// that ran out of time) are Throttled; the server's other 5xx answers are Failed; anything else
// (no answer, a canceled call) is Lost.
func OutcomeOf(err error) Outcome {
	if err == nil {
		return Answered
	}
	if apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		errors.Is(err, context.DeadlineExceeded) {
		return Throttled
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		if st.Status().Code >= 500 {
			return Failed
		}
		return Answered
	}
	return Lost
}
