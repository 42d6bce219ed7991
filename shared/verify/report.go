package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/retry"
)

// Status is the result of a layer or of the whole verification.
type Status string

// Statuses. A report FAILs when any layer FAILs, or when no evidence layer PASSes; it is UNKNOWN
// when no layer FAILs but one could not check (Unknown); WARN and SKIP do not fail it on their own.
const (
	Pass Status = "PASS"
	Fail Status = "FAIL"
	Warn Status = "WARN"
	Skip Status = "SKIP"
	// Unknown: the layer could not check (a throttled, timed-out or unreachable service): neither
	// proof nor disproof. Check again later; nothing needs redoing.
	Unknown Status = "UNKNOWN"
)

// LayerResult is the outcome of one layer.
type LayerResult struct {
	Name    string   `json:"name"`
	Status  Status   `json:"status"`
	Reasons []string `json:"reasons"`
	// Problems are the reasons that made the layer FAIL.
	Problems []string `json:"problems,omitempty"`
}

// add records a reason. A Pass reason is information: it does not lower a WARN or FAIL.
func (l *LayerResult) add(s Status, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	l.Reasons = append(l.Reasons, msg)
	if s == Fail {
		l.Problems = append(l.Problems, msg)
	}
	if rank(s) > rank(l.Status) {
		l.Status = s
	}
}

func rank(s Status) int {
	switch s {
	case Fail:
		return 4
	case Unknown:
		return 3
	case Warn:
		return 2
	case Pass:
		return 1
	default:
		return 0
	}
}

// KeyFacts is what the kms layer learned about the key.
type KeyFacts struct {
	KeyID             string    `json:"keyId"`
	State             string    `json:"state"`
	PrimaryKeyVersion string    `json:"primaryKeyVersion"`
	Versions          []string  `json:"versions"`
	AutomaticRotation string    `json:"automaticRotation"`
	RotationInterval  string    `json:"rotationInterval,omitempty"`
	LastRotationDate  time.Time `json:"lastRotationDate,omitzero"`
	NextRotationDate  time.Time `json:"nextRotationDate,omitzero"`
	DeleteDate        time.Time `json:"deleteDate,omitzero"`
}

// AuditFacts is what the audit layer found in ActionTrail.
type AuditFacts struct {
	// Identity is the expected caller: "role NAME" or "RAM user NAME".
	Identity string `json:"identity"`
	// Since and Until bound the window searched. Clamped is true when Since was moved forward to
	// ActionTrail's 90-day LookupEvents window.
	Since   time.Time `json:"since"`
	Until   time.Time `json:"until"`
	Clamped bool      `json:"clamped,omitempty"`
	// Events and Pages count what LookupEvents returned; Truncated is true when it stopped at its
	// cap with more events left in the window.
	Events    int  `json:"events"`
	Pages     int  `json:"pages"`
	Truncated bool `json:"truncated,omitempty"`
	// Calls counts successful calls by the expected identity, "<EventName> <KeyVersionId>" -> n.
	Calls map[string]int `json:"calls"`
	// OtherCallers counts calls on the key by other identities.
	OtherCallers int `json:"otherCallers"`
	// EventIDs are the ActionTrail eventIds of the expected identity's calls under the primary
	// version (at most MaxAuditEventIDs): what the audit layer relied on.
	EventIDs []string `json:"eventIds,omitempty"`
}

// MaxAuditEventIDs caps AuditFacts.EventIDs.
const MaxAuditEventIDs = 20

// Report is the result of Verify. It is JSON-serialisable and holds no Secret data or key material.
type Report struct {
	Verdict   Status    `json:"verdict"`
	CheckedAt time.Time `json:"checkedAt"`
	// Reasons explain a verdict that no single layer explains (no evidence).
	Reasons []string `json:"reasons,omitempty"`
	// RequestedLayers are the layers that ran, in order; LayersDefaulted is true when they were
	// not listed explicitly but chosen as every layer whose inputs were given.
	RequestedLayers []string           `json:"requestedLayers"`
	LayersDefaulted bool               `json:"layersDefaulted,omitempty"`
	Layers          []LayerResult      `json:"layers"`
	Key             *KeyFacts          `json:"key,omitempty"`
	Storage         []etcdscan.Report  `json:"storage,omitempty"`
	Convergence     *reencrypt.Summary `json:"convergence,omitempty"`
	// Replicas says which API server replicas served the convergence pass.
	Replicas *ReplicaCoverage `json:"replicas,omitempty"`
	Audit    *AuditFacts      `json:"audit,omitempty"`
	// Retirement says how many objects still depend on each older key version and whether it is
	// safe to retire them (retirement.go).
	Retirement *Retirement `json:"retirement,omitempty"`
}

// Layer returns the named layer's result (Status SKIP when it did not run).
func (r Report) Layer(name string) LayerResult {
	for _, l := range r.Layers {
		if l.Name == name {
			return l
		}
	}
	return LayerResult{Name: name, Status: Skip}
}

// finish sets the verdict: FAIL when a layer failed or when no evidence layer passed and nothing is
// left unchecked; UNKNOWN when no layer failed but one could not check.
func (r *Report) finish() {
	r.Verdict = Pass
	evidence := false
	var ran, unchecked []string
	for _, l := range r.Layers {
		switch l.Status {
		case Fail:
			r.Verdict = Fail
		case Unknown:
			unchecked = append(unchecked, l.Name)
		}
		if isEvidence(l.Name) && l.Status == Pass {
			evidence = true
		}
		ran = append(ran, fmt.Sprintf("%s %s", l.Name, l.Status))
	}
	if r.Verdict == Fail {
		return
	}
	if len(unchecked) > 0 {
		r.Verdict = Unknown
		r.Reasons = append(r.Reasons, fmt.Sprintf("could not check %s (throttled, timed out or unreachable): neither proof nor disproof; check again later",
			strings.Join(unchecked, ", ")))
		return
	}
	if !evidence {
		r.Verdict = Fail
		r.Reasons = append(r.Reasons, fmt.Sprintf("no evidence: none of the layers that prove what is stored (%s) passed (ran: %s); "+
			"kms and apiserver show that the key and the plugin work, and audit that the key is used, not that every stored object was "+
			"rewritten under the current key version: that takes an etcd scan (storage) or a convergence pass over every API server replica",
			strings.Join(EvidenceLayers, ", "), orNone(strings.Join(ran, ", "))))
	}
}

// WriteText writes the report for people: the verdict, the layers run, then one block per layer.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "VERDICT: %s (checked %s)\n", r.Verdict, r.CheckedAt.UTC().Format(time.RFC3339))
	for _, reason := range r.Reasons {
		fmt.Fprintf(&b, "    - %s\n", reason)
	}
	how := "as listed"
	if r.LayersDefaulted {
		how = "every layer whose inputs were given"
	}
	fmt.Fprintf(&b, "layers: %s (%s)\n", orNone(strings.Join(r.RequestedLayers, ", ")), how)
	for _, l := range r.Layers {
		fmt.Fprintf(&b, "[%s] %s\n", l.Status, l.Name)
		for _, reason := range l.Reasons {
			fmt.Fprintf(&b, "    - %s\n", reason)
		}
	}
	writeRetirement(&b, r.Retirement)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// failOrUnknown records a failed check: Unknown when err says the check could not be made (a
// throttled, timed-out or unreachable service: retry.Retriable), Fail otherwise.
func (l *LayerResult) failOrUnknown(err error, format string, a ...any) {
	if couldNotCheck(err) {
		l.add(Unknown, "could not check: "+format, a...)
		return
	}
	l.add(Fail, format, a...)
}

// couldNotCheck reports whether err means a check could not be made rather than that it failed.
func couldNotCheck(err error) bool {
	return err != nil && (retry.Classify(err) == retry.Retriable || errors.Is(err, context.DeadlineExceeded))
}

// joinCounts formats counts in key order, "k<sep>n, ...", or "none".
func joinCounts(counts map[string]int, sep string) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s%s%d", k, sep, counts[k]))
	}
	return orNone(strings.Join(parts, ", "))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
