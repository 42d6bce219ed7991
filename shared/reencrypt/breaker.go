package reencrypt

import (
	"errors"
	"fmt"
	"sync"

	"github.com/rekey-dev/rekey/shared/retry"
)

// MaxFailuresInARow is how many objects in a row may fail after exhausting their retries (5xx,
// timeouts, resets) before the run stops: the API server is failing every object for one reason
// (KMS unreachable, etcd gone), and retrying each remaining object with its own backoff would only
// turn an outage into a storm of requests. One object that succeeds in between resets the count.
const MaxFailuresInARow = 10

// OutageError stops a run whose objects kept failing after their retries: the API server fails
// every object, not one of them.
type OutageError struct {
	// Failed is the number of objects that failed in a row.
	Failed int
	// Err is the last object's error.
	Err error
}

// Error implements error.
func (e *OutageError) Error() string {
	return fmt.Sprintf("stopped after %d objects in a row failed even after retries: %v", e.Failed, e.Err)
}

// Unwrap returns the last object's error.
func (e *OutageError) Unwrap() error { return e.Err }

// KMSError explains an API server error that says it could not encrypt or decrypt stored objects:
// with KMS encryption at rest this is KMS (or the KMS plugin) failing the API server, not rekey.
type KMSError struct {
	// Err is the API server's error.
	Err error
}

// Error implements error.
func (e *KMSError) Error() string {
	return "the API server cannot encrypt or decrypt with its KMS provider (KMS unreachable, the key disabled or deleted, " +
		"or the KMS plugin down): fix KMS access, then run again (objects already rewritten come back current): " + e.Err.Error()
}

// Unwrap returns the API server's error.
func (e *KMSError) Unwrap() error { return e.Err }

// explainKMS wraps err in a *KMSError when the API server's answer in it is a 5xx that names an
// encryption-at-rest failure (retry.EncryptionFault); other errors are returned unchanged.
func explainKMS(err error) error {
	var ke *KMSError
	if err == nil || errors.As(err, &ke) || !retry.EncryptionFault(err) {
		return err
	}
	return &KMSError{Err: err}
}

// breaker counts objects that failed in a row after exhausting their retries and trips at
// MaxFailuresInARow. It is safe for concurrent use.
type breaker struct {
	mu     sync.Mutex
	inARow int
}

// succeeded records an object that reached an outcome other than Failed.
func (b *breaker) succeeded() {
	b.mu.Lock()
	b.inARow = 0
	b.mu.Unlock()
}

// failed records a failed object and returns the error that stops the run when this failure
// completes a streak (nil otherwise). Only failures that exhausted their retries count: a denial,
// a conflict or an invalid object is about that object.
func (b *breaker) failed(err error) error {
	var ex *retry.ExhaustedError
	if !errors.As(err, &ex) {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inARow++
	if b.inARow != MaxFailuresInARow {
		return nil
	}
	return &OutageError{Failed: b.inARow, Err: explainKMS(err)}
}
