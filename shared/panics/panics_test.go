package panics

import (
	"errors"
	"strings"
	"testing"
)

func TestRecoverTurnsAPanicIntoAnError(t *testing.T) {
	var got *Error
	func() {
		defer Recover("object a/b", func(e *Error) { got = e })
		var m map[string]int
		m["x"] = 1 // assignment to entry in nil map
	}()
	if got == nil {
		t.Fatal("the panic was not recovered")
	}
	if !strings.HasPrefix(got.Error(), "panic: ") || !strings.Contains(got.Error(), "nil map") || !strings.Contains(got.Error(), "object a/b") {
		t.Fatalf("error = %q, want the value and where", got.Error())
	}
	if !strings.Contains(string(got.Stack), "TestRecoverTurnsAPanicIntoAnError") {
		t.Fatalf("stack does not show the panicking function:\n%s", got.Stack)
	}
	var pe *Error
	if !errors.As(error(got), &pe) {
		t.Fatal("not an *Error")
	}
}

func TestRecoverWithoutPanicDoesNothing(t *testing.T) {
	called := false
	func() {
		defer Recover("nothing", func(*Error) { called = true })
	}()
	if called {
		t.Fatal("handle called without a panic")
	}
}

func TestNewKeepsAnError(t *testing.T) {
	inner := &Error{Where: "inner", Value: "boom"}
	if New("outer", inner) != inner {
		t.Fatal("a re-panicked *Error should be kept as is")
	}
}
