package verify

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// Status is the result of a layer or of the whole verification.
type Status string

// Statuses. A report FAILs when any layer FAILs; WARN and SKIP do not fail it.
const (
	Pass Status = "PASS"
	Fail Status = "FAIL"
	Warn Status = "WARN"
	Skip Status = "SKIP"
)

// Layer names.
const (
	LayerKMS         = "kms"
	LayerStorage     = "storage"
	LayerConvergence = "convergence"
	LayerAPIServer   = "apiserver"
	LayerAudit       = "audit"
)

// LayerResult is the outcome of one layer.
type LayerResult struct {
	Name    string   `json:"name"`
	Status  Status   `json:"status"`
	Reasons []string `json:"reasons"`
	// Problems are the reasons that made the layer FAIL.
	Problems []string `json:"problems,omitempty"`
}

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
	Since time.Time `json:"since"`
	// Calls counts successful calls by the cluster identity, "<EventName> <KeyVersionId>" -> n.
	Calls map[string]int `json:"calls"`
	// OtherCallers counts calls on the key by other identities.
	OtherCallers int `json:"otherCallers"`
}

// Report is the result of Verify. It is JSON-serialisable and holds no Secret data or key material.
type Report struct {
	Verdict     Status             `json:"verdict"`
	CheckedAt   time.Time          `json:"checkedAt"`
	Layers      []LayerResult      `json:"layers"`
	Key         *KeyFacts          `json:"key,omitempty"`
	Storage     []etcdscan.Report  `json:"storage,omitempty"`
	Convergence *reencrypt.Summary `json:"convergence,omitempty"`
	Audit       *AuditFacts        `json:"audit,omitempty"`
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

func (r *Report) finish() {
	r.Verdict = Pass
	for _, l := range r.Layers {
		if l.Status == Fail {
			r.Verdict = Fail
		}
	}
}

// WriteText writes the report for people: the verdict, then one block per layer.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "VERDICT: %s (checked %s)\n", r.Verdict, r.CheckedAt.UTC().Format(time.RFC3339))
	for _, l := range r.Layers {
		fmt.Fprintf(&b, "[%s] %s\n", l.Status, l.Name)
		for _, reason := range l.Reasons {
			fmt.Fprintf(&b, "    - %s\n", reason)
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
