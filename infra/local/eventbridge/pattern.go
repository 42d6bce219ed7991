package eventbridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Pattern is a compiled EventBridge event pattern. It is immutable and safe
// for concurrent use.
type Pattern struct {
	src  string
	root *node
}

// node is one JSON object level of a pattern: its keys are ANDed.
type node struct {
	fields []field // sorted by key
}

// field is one key of a pattern object: a nested object (child) or an array
// of matchers (leaf) whose elements are ORed.
type field struct {
	key   string
	child *node
	leaf  []matcher
}

type matchKind int

const (
	kindExact matchKind = iota + 1
	kindPrefix
	kindSuffix
	kindContains
	kindAnythingBut
	kindAnythingButPrefix
	kindNumeric
	kindCIDR
	kindExists
)

// matcher is one element of a pattern array.
type matcher struct {
	kind   matchKind
	token  string              // kindExact: the value's token (see token)
	str    string              // prefix, suffix, contains, anything-but prefix
	set    map[string]struct{} // kindAnythingBut: tokens that must not match
	ranges []bound             // kindNumeric
	cidr   netip.Prefix        // kindCIDR
	exists bool                // kindExists
}

// bound is one comparison of a numeric matcher.
type bound struct {
	op  string
	num float64
}

// ErrInvalidPattern matches (errors.Is) every error ParsePattern returns.
var ErrInvalidPattern = errors.New("invalid event pattern")

// patternError says where a pattern is invalid.
type patternError struct {
	path    string
	problem string
}

func (e *patternError) Error() string {
	if e.path == "" {
		return "invalid event pattern: " + e.problem
	}
	return "invalid event pattern: " + e.path + ": " + e.problem
}

func (e *patternError) Is(target error) bool { return target == ErrInvalidPattern }

func invalid(path, format string, args ...any) error {
	return &patternError{path: path, problem: fmt.Sprintf(format, args...)}
}

// numericOps are the comparison operators of the numeric matcher.
var numericOps = map[string]bool{"<": true, "<=": true, "=": true, ">": true, ">=": true}

// ParsePattern compiles an event pattern written as a JSON object, the form
// of an s.yaml trigger's eventRuleFilterPattern, following Alibaba
// EventBridge's documented rules:
//
//   - keys are ANDed; each key's value is an array whose elements are ORed, or
//     (only under "data", at any depth) a nested object;
//   - an array element is an exact value (string, number, true, false, "" or
//     null) or an object with exactly one operator: {"prefix": s},
//     {"suffix": s}, {"contains": s}, {"anything-but": v | [v, ...] |
//     {"prefix": s}}, {"numeric": [op, n (, op, n)]}, {"cidr": "a.b.c.d/n"}
//     (IPv4 only) or {"exists": bool};
//   - there is no $or.
//
// Exact values compare as written: numbers by their literal text (300 and
// 300.0 differ), and a string never equals a number. An empty object matches
// every event. Any other input is an error matching ErrInvalidPattern.
func ParsePattern(s string) (*Pattern, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, invalid("", "not JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, invalid("", "trailing data after the JSON object")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, invalid("", "want a JSON object, got %s", jsonKind(v))
	}
	root, err := compileNode(obj, "", true)
	if err != nil {
		return nil, err
	}
	return &Pattern{src: s, root: root}, nil
}

// MustParsePattern is ParsePattern for patterns known to be valid; it panics
// on an error. It is meant for tests and package-level variables.
func MustParsePattern(s string) *Pattern {
	p, err := ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

// String returns the pattern as it was given to ParsePattern.
func (p *Pattern) String() string { return p.src }

func compileNode(obj map[string]any, path string, top bool) (*node, error) {
	n := &node{fields: make([]field, 0, len(obj))}
	for key, v := range obj {
		fp := joinPath(path, key)
		if strings.HasPrefix(key, "$") {
			return nil, invalid(fp, "%s is not supported (EventBridge patterns have no $ operators)", key)
		}
		switch val := v.(type) {
		case []any:
			ms, err := compileLeaf(val, fp)
			if err != nil {
				return nil, err
			}
			n.fields = append(n.fields, field{key: key, leaf: ms})
		case map[string]any:
			if top && key != "data" {
				return nil, invalid(fp, "nested objects are only allowed under data")
			}
			child, err := compileNode(val, fp, false)
			if err != nil {
				return nil, err
			}
			n.fields = append(n.fields, field{key: key, child: child})
		default:
			return nil, invalid(fp, "want an array of values (or an object under data), got %s", jsonKind(v))
		}
	}
	sort.Slice(n.fields, func(i, j int) bool { return n.fields[i].key < n.fields[j].key })
	return n, nil
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func compileLeaf(vals []any, path string) ([]matcher, error) {
	if len(vals) == 0 {
		return nil, invalid(path, "empty array matches nothing")
	}
	ms := make([]matcher, 0, len(vals))
	for i, v := range vals {
		ep := path + "[" + strconv.Itoa(i) + "]"
		switch val := v.(type) {
		case map[string]any:
			m, err := compileOperator(val, ep)
			if err != nil {
				return nil, err
			}
			ms = append(ms, m)
		case []any:
			return nil, invalid(ep, "nested arrays are not allowed")
		default:
			ms = append(ms, matcher{kind: kindExact, token: token(val)})
		}
	}
	return ms, nil
}

func compileOperator(obj map[string]any, path string) (matcher, error) {
	if len(obj) != 1 {
		return matcher{}, invalid(path, "an operator object needs exactly one key, got %d", len(obj))
	}
	for op, arg := range obj {
		opPath := path + "." + op
		switch op {
		case "prefix", "suffix", "contains":
			s, ok := arg.(string)
			if !ok {
				return matcher{}, invalid(opPath, "want a string, got %s", jsonKind(arg))
			}
			kind := map[string]matchKind{"prefix": kindPrefix, "suffix": kindSuffix, "contains": kindContains}[op]
			return matcher{kind: kind, str: s}, nil
		case "anything-but":
			return compileAnythingBut(arg, opPath)
		case "numeric":
			return compileNumeric(arg, opPath)
		case "cidr":
			s, ok := arg.(string)
			if !ok {
				return matcher{}, invalid(opPath, "want a string, got %s", jsonKind(arg))
			}
			pfx, err := netip.ParsePrefix(s)
			if err != nil || !pfx.Addr().Is4() {
				return matcher{}, invalid(opPath, "want an IPv4 CIDR block such as 10.0.0.0/24, got %q", s)
			}
			return matcher{kind: kindCIDR, cidr: pfx.Masked()}, nil
		case "exists":
			b, ok := arg.(bool)
			if !ok {
				return matcher{}, invalid(opPath, "want true or false, got %s", jsonKind(arg))
			}
			return matcher{kind: kindExists, exists: b}, nil
		default:
			return matcher{}, invalid(opPath, "unknown operator %q (want prefix, suffix, contains, anything-but, numeric, cidr or exists)", op)
		}
	}
	panic("unreachable")
}

func compileAnythingBut(arg any, path string) (matcher, error) {
	switch a := arg.(type) {
	case string, json.Number:
		return matcher{kind: kindAnythingBut, set: map[string]struct{}{token(a): {}}}, nil
	case []any:
		if len(a) == 0 {
			return matcher{}, invalid(path, "empty list")
		}
		set := make(map[string]struct{}, len(a))
		for i, v := range a {
			switch v.(type) {
			case string, json.Number:
				set[token(v)] = struct{}{}
			default:
				return matcher{}, invalid(path+"["+strconv.Itoa(i)+"]", "want a string or a number, got %s", jsonKind(v))
			}
		}
		return matcher{kind: kindAnythingBut, set: set}, nil
	case map[string]any:
		if len(a) != 1 {
			return matcher{}, invalid(path, "want {\"prefix\": string}")
		}
		p, ok := a["prefix"].(string)
		if !ok {
			return matcher{}, invalid(path, "want {\"prefix\": string}")
		}
		return matcher{kind: kindAnythingButPrefix, str: p}, nil
	default:
		return matcher{}, invalid(path, "want a string, a number, a list of them or {\"prefix\": string}, got %s", jsonKind(arg))
	}
}

func compileNumeric(arg any, path string) (matcher, error) {
	list, ok := arg.([]any)
	if !ok || (len(list) != 2 && len(list) != 4) {
		return matcher{}, invalid(path, "want [op, number] or [op, number, op, number]")
	}
	var bounds []bound
	for i := 0; i < len(list); i += 2 {
		op, ok := list[i].(string)
		if !ok || !numericOps[op] {
			return matcher{}, invalid(path+"["+strconv.Itoa(i)+"]", "want one of <, <=, =, >, >=")
		}
		num, ok := list[i+1].(json.Number)
		if !ok {
			return matcher{}, invalid(path+"["+strconv.Itoa(i+1)+"]", "want a number, got %s", jsonKind(list[i+1]))
		}
		f, err := num.Float64()
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return matcher{}, invalid(path+"["+strconv.Itoa(i+1)+"]", "number %s out of range", num)
		}
		bounds = append(bounds, bound{op: op, num: f})
	}
	if len(bounds) == 2 {
		lo, hi := bounds[0], bounds[1]
		if (lo.op != ">" && lo.op != ">=") || (hi.op != "<" && hi.op != "<=") {
			return matcher{}, invalid(path, "a range is a lower bound (> or >=) then an upper bound (< or <=)")
		}
		if lo.num > hi.num {
			return matcher{}, invalid(path, "the lower bound is above the upper bound")
		}
	}
	return matcher{kind: kindNumeric, ranges: bounds}, nil
}

// token renders a JSON scalar so that two scalars are equal exactly when
// EventBridge's exact match says so: same type, same text.
func token(v any) string {
	switch x := v.(type) {
	case string:
		return "s" + x
	case json.Number:
		return "n" + string(x)
	case bool:
		if x {
			return "btrue"
		}
		return "bfalse"
	case nil:
		return "z"
	default:
		return ""
	}
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// DecodeEvent decodes a JSON event (one object) the way Match reads it:
// numbers keep their literal text.
func DecodeEvent(event []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(event))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode event: trailing data after the JSON object")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("decode event: want a JSON object, got %s", jsonKind(v))
	}
	return obj, nil
}

// Match reports whether the JSON event (one object) matches the pattern. It
// fails only when the event is not a JSON object.
func (p *Pattern) Match(event []byte) (bool, error) {
	obj, err := DecodeEvent(event)
	if err != nil {
		return false, err
	}
	return p.MatchDecoded(obj), nil
}

// MatchDecoded reports whether an event decoded by DecodeEvent matches the
// pattern. It does not modify obj.
func (p *Pattern) MatchDecoded(obj map[string]any) bool {
	return p.root.match(obj)
}

// match evaluates a pattern object against an event value. A missing value or
// one that is not an object is treated as an empty object, so only
// {"exists": false} can match below it.
func (n *node) match(v any) bool {
	obj, _ := v.(map[string]any)
	for _, f := range n.fields {
		ev, ok := obj[f.key]
		if f.child != nil {
			if !f.child.match(ev) {
				return false
			}
			continue
		}
		if !matchLeaf(f.leaf, ev, ok) {
			return false
		}
	}
	return true
}

// matchLeaf evaluates an array of matchers (ORed) against an event value. An
// event array matches when any of its elements matches (the arrays intersect).
func matchLeaf(ms []matcher, v any, present bool) bool {
	for i := range ms {
		m := &ms[i]
		if m.kind == kindExists {
			if m.exists == present {
				return true
			}
			continue
		}
		if !present {
			continue
		}
		if arr, ok := v.([]any); ok {
			for _, el := range arr {
				if m.matchScalar(el) {
					return true
				}
			}
			continue
		}
		if m.matchScalar(v) {
			return true
		}
	}
	return false
}

// matchScalar evaluates one matcher against one present event value.
func (m *matcher) matchScalar(v any) bool {
	switch v.(type) {
	case map[string]any, []any:
		return false
	}
	switch m.kind {
	case kindExact:
		return token(v) == m.token
	case kindPrefix:
		s, ok := v.(string)
		return ok && strings.HasPrefix(s, m.str)
	case kindSuffix:
		s, ok := v.(string)
		return ok && strings.HasSuffix(s, m.str)
	case kindContains:
		s, ok := v.(string)
		return ok && strings.Contains(s, m.str)
	case kindAnythingBut:
		_, excluded := m.set[token(v)]
		return !excluded
	case kindAnythingButPrefix:
		s, ok := v.(string)
		return ok && !strings.HasPrefix(s, m.str)
	case kindNumeric:
		num, ok := v.(json.Number)
		if !ok {
			return false
		}
		f, err := num.Float64()
		if err != nil {
			return false
		}
		for _, b := range m.ranges {
			if !b.holds(f) {
				return false
			}
		}
		return true
	case kindCIDR:
		s, ok := v.(string)
		if !ok {
			return false
		}
		addr, err := netip.ParseAddr(s)
		return err == nil && addr.Is4() && m.cidr.Contains(addr)
	default:
		return false
	}
}

func (b bound) holds(f float64) bool {
	switch b.op {
	case "<":
		return f < b.num
	case "<=":
		return f <= b.num
	case "=":
		return f == b.num
	case ">":
		return f > b.num
	case ">=":
		return f >= b.num
	default:
		return false
	}
}
