package retry

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"
)

// Class says what a caller should do about an error.
type Class int

const (
	// OK means there was no error.
	OK Class = iota
	// Retriable errors are transient: throttling (429), server errors (5xx), timeouts, connection
	// resets. Try again after a backoff.
	Retriable
	// Conflict means a precondition failed (409): the object changed since it was read.
	Conflict
	// NotFound means the object is gone (404).
	NotFound
	// Denied means the caller lacks authentication or permission (401/403). Retrying cannot help
	// and the same will hold for every other object: stop at once.
	Denied
	// Permanent errors will not go away by trying again (invalid requests, unknown kinds, ...).
	Permanent
)

// String returns the class name used in logs and summaries.
func (c Class) String() string {
	switch c {
	case OK:
		return "ok"
	case Retriable:
		return "retriable"
	case Conflict:
		return "conflict"
	case NotFound:
		return "not-found"
	case Denied:
		return "denied"
	default:
		return "permanent"
	}
}

// StatusCoder is implemented by errors that carry an HTTP status, such as the Alibaba Cloud SDK's
// *errors.ServerError (HttpStatus). It lets Classify treat every remote API alike.
type StatusCoder interface {
	HttpStatus() int
}

// Classify sorts an error from a remote call into a Class. Context cancellation by the caller is
// Permanent (the caller gave up); a per-call timeout that fired while the caller's context is still
// live shows up as context.DeadlineExceeded inside a transport error and is Retriable.
func Classify(err error) Class {
	if err == nil {
		return OK
	}
	if errors.Is(err, context.Canceled) {
		return Permanent
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return classifyStatus(int(status.Status().Code), err)
	}
	var sc StatusCoder
	if errors.As(err, &sc) && sc.HttpStatus() != 0 {
		return classifyStatus(sc.HttpStatus(), err)
	}
	if isTransport(err) {
		return Retriable
	}
	return Permanent
}

func classifyStatus(code int, err error) Class {
	switch {
	case apierrors.IsConflict(err) || code == http.StatusConflict:
		return Conflict
	case code == http.StatusNotFound:
		return NotFound
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return Denied
	case code == http.StatusTooManyRequests, code == http.StatusRequestTimeout, code >= 500:
		return Retriable
	case apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err):
		return Retriable
	default:
		return Permanent
	}
}

func isTransport(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	if utilnet.IsConnectionReset(err) || utilnet.IsConnectionRefused(err) || utilnet.IsProbableEOF(err) ||
		utilnet.IsHTTP2ConnectionLost(err) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// RetryAfter returns the delay a server asked for (Retry-After on 429/5xx), if any.
func RetryAfter(err error) (time.Duration, bool) {
	if err == nil {
		return 0, false
	}
	if s, ok := apierrors.SuggestsClientDelay(err); ok && s > 0 {
		return time.Duration(s) * time.Second, true
	}
	return 0, false
}

// encryptionFaultMessages is what kube-apiserver says when its encryption at rest fails: the
// storage layer's "not transformable" and "unable to transform key", and the KMS v1/v2 envelope
// transformers' own messages.
var encryptionFaultMessages = []string{
	"not transformable",
	"unable to transform key",
	"unexpected nil transformer",
	"failed to decrypt dek",
	"failed to encrypt dek",
	"encrypteddeksource with keyid",
	"failed to decrypt data",
	"failed to encrypt data",
	"kms",
}

// EncryptionFault reports whether err is an API server answer (5xx) saying that it could not
// encrypt or decrypt stored objects: with KMS encryption at rest, KMS or the KMS plugin failing the
// API server. Retrying such an error object by object only adds load; callers stop and name KMS.
func EncryptionFault(err error) bool {
	var st apierrors.APIStatus
	if err == nil || !errors.As(err, &st) || st.Status().Code < 500 {
		return false
	}
	msg := strings.ToLower(st.Status().Message)
	for _, m := range encryptionFaultMessages {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}
