package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// MaxInputBytes bounds Decode's input (1 MiB).
const MaxInputBytes = 1 << 20

// ErrMalformed matches (errors.Is) every error Decode returns: the input is not one of the accepted
// shapes and trying again cannot help.
var ErrMalformed = errors.New("malformed event input")

// DecodeError says what was wrong with Decode's input. It is never retryable: a handler should log it
// and return a result, not an error, so that Function Compute does not retry the same bytes.
type DecodeError struct {
	// Index is the element of a JSON array at fault, -1 when the input as a whole is.
	Index int
	// Field names the offending attribute ("" when the shape as a whole is wrong).
	Field string
	// Problem says what is wrong, in words.
	Problem string
	// Err is the underlying error, if any.
	Err error
}

// Error implements error.
func (e *DecodeError) Error() string {
	msg := "decode event input"
	if e.Index >= 0 {
		msg += ": element " + strconv.Itoa(e.Index)
	}
	if e.Field != "" {
		msg += ": " + e.Field
	}
	msg += ": " + e.Problem
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the underlying error.
func (e *DecodeError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrMalformed) true.
func (e *DecodeError) Is(target error) bool { return target == ErrMalformed }

// Retryable reports false: a decode error is permanent.
func (e *DecodeError) Retryable() bool { return false }

// Payload is what Decode found: a timer payload or EventBridge events, never both.
type Payload struct {
	// Timer is set when the input was a timer trigger payload.
	Timer *Timer
	// Events are the CloudEvents of the input, in input order, first occurrence of each DedupKey only.
	Events []CloudEvent
	// Duplicates counts events dropped because an earlier one in the same input had the same DedupKey.
	Duplicates int
	// Rejected are the malformed elements of a JSON array, by position (DecodeError.Index): the
	// other elements are in Events. An array whose every element is malformed is an error instead.
	Rejected []*DecodeError
}

// Decode decodes one Function Compute invocation payload: an FC timer payload, a CloudEvent, a JSON
// array of CloudEvents, or a JSON array of JSON strings each holding a CloudEvent. For ActionTrail
// types ("<product>:ActionTrail:<kind>") it also decodes data into CloudEvent.Record. Input larger
// than MaxInputBytes, or of any other shape, gives a *DecodeError (errors.Is ErrMalformed); in an
// array, malformed elements are reported in Payload.Rejected by position and the others decoded.
func Decode(raw []byte) (Payload, error) {
	if len(raw) > MaxInputBytes {
		return Payload{}, &DecodeError{Index: -1, Problem: fmt.Sprintf("input is %d bytes, more than the %d accepted", len(raw), MaxInputBytes)}
	}
	if !utf8.Valid(raw) {
		return Payload{}, &DecodeError{Index: -1, Problem: "input is not valid UTF-8"}
	}
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		return Payload{}, &DecodeError{Index: -1, Problem: "input is empty"}
	}
	switch trimmed[0] {
	case '{':
		return decodeObject(trimmed)
	case '[':
		return decodeArray(trimmed)
	default:
		return Payload{}, &DecodeError{Index: -1, Problem: "input is neither a JSON object nor a JSON array"}
	}
}

func decodeObject(raw []byte) (Payload, error) {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return Payload{}, &DecodeError{Index: -1, Problem: "invalid JSON object", Err: err}
	}
	if isCloudEvent(keys) {
		ev, err := decodeCloudEvent(raw, -1)
		if err != nil {
			return Payload{}, err
		}
		return Payload{Events: []CloudEvent{ev}}, nil
	}
	if isTimer(keys) {
		t, err := decodeTimer(raw)
		if err != nil {
			return Payload{}, err
		}
		return Payload{Timer: &t}, nil
	}
	return Payload{}, &DecodeError{Index: -1, Problem: "object is neither a CloudEvent (specversion, id, source, type) nor a timer payload (triggerTime, triggerName)"}
}

func decodeArray(raw []byte) (Payload, error) {
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return Payload{}, &DecodeError{Index: -1, Problem: "invalid JSON array", Err: err}
	}
	if len(elems) == 0 {
		return Payload{}, &DecodeError{Index: -1, Problem: "array holds no events"}
	}
	var p Payload
	seen := make(map[DedupKey]bool, len(elems))
	for i, elem := range elems {
		ev, err := decodeElement(elem, i)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				de = &DecodeError{Index: i, Problem: "undecodable", Err: err}
			}
			p.Rejected = append(p.Rejected, de)
			continue
		}
		if seen[ev.DedupKey()] {
			p.Duplicates++
			continue
		}
		seen[ev.DedupKey()] = true
		p.Events = append(p.Events, ev)
	}
	if len(p.Events) == 0 && len(p.Rejected) > 0 {
		return Payload{}, p.Rejected[0]
	}
	return p, nil
}

// decodeElement decodes element i of an array: a CloudEvent, or a JSON string holding one.
func decodeElement(elem json.RawMessage, i int) (CloudEvent, error) {
	elem = bytes.TrimSpace(elem)
	if len(elem) > 0 && elem[0] == '"' {
		var s string
		if err := json.Unmarshal(elem, &s); err != nil {
			return CloudEvent{}, &DecodeError{Index: i, Problem: "invalid JSON string", Err: err}
		}
		elem = bytes.TrimSpace([]byte(s))
	}
	if len(elem) == 0 || elem[0] != '{' {
		return CloudEvent{}, &DecodeError{Index: i, Problem: "element is neither a JSON object nor a JSON string holding one"}
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(elem, &keys); err != nil {
		return CloudEvent{}, &DecodeError{Index: i, Problem: "invalid JSON object", Err: err}
	}
	if !isCloudEvent(keys) {
		if isTimer(keys) {
			return CloudEvent{}, &DecodeError{Index: i, Problem: "a timer payload inside an array (timers deliver one object)"}
		}
		return CloudEvent{}, &DecodeError{Index: i, Problem: "element is not a CloudEvent (specversion, id, source, type)"}
	}
	return decodeCloudEvent(elem, i)
}

// isCloudEvent reports whether an object claims to be a CloudEvent (it has any of the required
// attributes); decodeCloudEvent then insists on all of them.
func isCloudEvent(keys map[string]json.RawMessage) bool {
	for _, k := range []string{"specversion", "source", "id", "type"} {
		if _, ok := keys[k]; ok {
			return true
		}
	}
	return false
}

func isTimer(keys map[string]json.RawMessage) bool {
	_, t := keys["triggerTime"]
	_, n := keys["triggerName"]
	return t || n
}

func decodeCloudEvent(raw []byte, index int) (CloudEvent, error) {
	var ev CloudEvent
	if err := json.Unmarshal(raw, &ev); err != nil {
		return CloudEvent{}, &DecodeError{Index: index, Field: jsonField(err), Problem: "not a CloudEvent", Err: err}
	}
	for _, f := range []struct{ name, value string }{
		{"specversion", ev.SpecVersion}, {"id", ev.ID}, {"source", ev.Source}, {"type", ev.Type},
	} {
		if f.value == "" {
			return CloudEvent{}, &DecodeError{Index: index, Field: f.name, Problem: "required CloudEvents attribute is missing or empty"}
		}
	}
	if ev.SpecVersion != SpecVersion {
		return CloudEvent{}, &DecodeError{Index: index, Field: "specversion", Problem: fmt.Sprintf("%q is not supported, want %q", ev.SpecVersion, SpecVersion)}
	}
	if _, _, ok := ActionTrailType(ev.Type); ok {
		rec, err := decodeRecord(ev.Data)
		if err != nil {
			return CloudEvent{}, &DecodeError{Index: index, Field: "data", Problem: fmt.Sprintf("%s event %q does not carry an ActionTrail record", ev.Type, ev.ID), Err: err}
		}
		ev.Record = rec
	}
	return ev, nil
}

func decodeTimer(raw []byte) (Timer, error) {
	var t Timer
	if err := json.Unmarshal(raw, &t); err != nil {
		return Timer{}, &DecodeError{Index: -1, Field: jsonField(err), Problem: "not a timer payload", Err: err}
	}
	if t.TriggerTime.IsZero() {
		return Timer{}, &DecodeError{Index: -1, Field: "triggerTime", Problem: "missing or zero"}
	}
	if t.TriggerName == "" {
		return Timer{}, &DecodeError{Index: -1, Field: "triggerName", Problem: "missing or empty"}
	}
	return t, nil
}

// jsonField names the field an encoding/json error is about, when it says.
func jsonField(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return te.Field
	}
	return ""
}
