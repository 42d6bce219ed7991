// Package panics turns a panic in a goroutine rekey started into an error, so that one broken
// object, callback or cluster fails alone instead of taking the process down with it (a Function
// Compute instance dies on a panic in any goroutine, and with it every cluster the invocation was
// working on).
//
// Use it only at the boundaries where work is handed out: per object in the engine's workers, the
// engine's lister, a job, the Lease renewal, a cluster in a handler loop. The error says where the
// panic happened and its value; the stack is kept for the log, never for results.
package panics

import (
	"fmt"
	"runtime/debug"
)

// Error is a recovered panic.
type Error struct {
	// Where names the work that panicked ("patch secrets ns/name", "lister", "job c1/...").
	Where string
	// Value is the panic's value, formatted with %v.
	Value string
	// Stack is the goroutine's stack at the recovery, for logs.
	Stack []byte
}

// Error implements error: "panic: <value> (in <where>)".
func (e *Error) Error() string {
	return fmt.Sprintf("panic: %s (in %s)", e.Value, e.Where)
}

// New returns the Error for the value v recovered while doing where. Call it from the deferred
// function that called recover, so that the stack still shows where the panic happened.
func New(where string, v any) *Error {
	if err, ok := v.(*Error); ok {
		return err
	}
	return &Error{Where: where, Value: fmt.Sprint(v), Stack: debug.Stack()}
}

// Recover, deferred, recovers a panic of the goroutine doing where and hands it to handle as an
// *Error; without a panic it does nothing. It must be deferred directly:
//
//	defer panics.Recover("lister", func(e *panics.Error) { err = e })
func Recover(where string, handle func(*Error)) {
	if v := recover(); v != nil {
		handle(New(where, v))
	}
}
