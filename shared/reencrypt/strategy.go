package reencrypt

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/version"
)

// Strategy is how objects are made to be rewritten.
type Strategy string

const (
	// Auto picks Rewrite on servers that can use KMS v2 (1.31 and later), else Annotate.
	Auto Strategy = "auto"
	// Rewrite sends a no-op merge patch with a resourceVersion precondition; only stale objects are
	// written.
	Rewrite Strategy = "rewrite"
	// Annotate sets RotationAnnotation on every object, so every object is written.
	Annotate Strategy = "annotate"
)

// RotationAnnotation is the annotation Annotate sets, the one ACK's documentation uses.
const RotationAnnotation = "encryption-key-rotation-time"

// ParseStrategy parses a strategy name; "replace" is accepted as an alias of rewrite (it does what
// `kubectl replace` does for encryption, without moving the data).
func ParseStrategy(s string) (Strategy, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", string(Auto):
		return Auto, nil
	case string(Rewrite), "replace":
		return Rewrite, nil
	case string(Annotate):
		return Annotate, nil
	}
	return "", fmt.Errorf("unknown strategy %q: want auto, rewrite (alias replace) or annotate", s)
}

// Resolve turns Auto into a concrete strategy for a server's git version (e.g. "v1.37.2" or
// "v1.31.1-aliyun.1"); other strategies are returned as they are.
func (s Strategy) Resolve(serverVersion string) (Strategy, error) {
	if s != Auto {
		return s, nil
	}
	v, err := version.ParseGeneric(serverVersion)
	if err != nil {
		return "", fmt.Errorf("choose strategy: parse server version %q: %w", serverVersion, err)
	}
	if v.AtLeast(version.MajorMinor(1, 31)) {
		return Rewrite, nil
	}
	return Annotate, nil
}

// patchBody builds the merge patch a strategy sends for one object.
func patchBody(s Strategy, resourceVersion string, rotationTime time.Time) ([]byte, error) {
	type meta struct {
		ResourceVersion string            `json:"resourceVersion,omitempty"`
		Annotations     map[string]string `json:"annotations,omitempty"`
	}
	var m meta
	switch s {
	case Rewrite:
		m.ResourceVersion = resourceVersion
	case Annotate:
		// Nanoseconds: two runs in the same second must still change every object, or the second
		// (say, right after another rotation) writes nothing and, on KMS v1, re-encrypts nothing.
		m.Annotations = map[string]string{RotationAnnotation: rotationTime.UTC().Format(time.RFC3339Nano)}
	default:
		return nil, fmt.Errorf("build patch: strategy %q is not concrete", s)
	}
	return json.Marshal(struct {
		Metadata meta `json:"metadata"`
	}{m})
}
