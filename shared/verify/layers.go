package verify

import (
	"fmt"
	"slices"
	"strings"
)

// Layer names.
const (
	LayerKMS         = "kms"
	LayerStorage     = "storage"
	LayerConvergence = "convergence"
	LayerAPIServer   = "apiserver"
	LayerAudit       = "audit"
)

// AllLayers lists every layer in the order Verify runs them.
var AllLayers = []string{LayerKMS, LayerStorage, LayerConvergence, LayerAPIServer, LayerAudit}

// EvidenceLayers are the layers that prove what is stored: a PASS needs at least one of them to
// PASS. kms and apiserver show only that the key and the plugin can work; audit corroborates (the
// API server's KMS identity used the primary version), it never proves that every stored object was
// rewritten: one Encrypt under the new version is compatible with every older object still under
// the old one.
var EvidenceLayers = []string{LayerStorage, LayerConvergence}

func isEvidence(layer string) bool { return slices.Contains(EvidenceLayers, layer) }

// InputError reports a layer asked for without its inputs, or an unknown layer.
type InputError struct {
	// Layer is the layer asked for.
	Layer string
	// Missing names the Inputs fields the layer needs and did not get ("" for an unknown layer).
	Missing []string
}

func (e *InputError) Error() string {
	if len(e.Missing) == 0 {
		return fmt.Sprintf("unknown layer %q (want %s)", e.Layer, strings.Join(AllLayers, ", "))
	}
	return fmt.Sprintf("layer %s needs %s", e.Layer, strings.Join(e.Missing, " and "))
}

// missing returns the Inputs fields layer needs and in lacks.
func (in Inputs) missing(layer string) []string {
	var out []string
	need := func(ok bool, field string) {
		if !ok {
			out = append(out, field)
		}
	}
	switch layer {
	case LayerKMS:
		need(in.KMS != nil, "KMS")
		need(in.KeyID != "", "KeyID")
	case LayerStorage:
		need(in.Etcd != nil, "Etcd")
	case LayerConvergence:
		need(in.Convergence != nil || in.ConvergencePass != nil, "Convergence")
	case LayerAPIServer:
		need(in.APIServer != nil, "APIServer")
	case LayerAudit:
		// The key's primary version tells whether the calls prove a rotation was picked up.
		need(in.Trail != nil, "Trail")
		need(in.KMS != nil, "KMS")
		need(in.KeyID != "", "KeyID")
	}
	return out
}

// Available returns the layers whose inputs are given, in AllLayers order: what Verify runs when
// Inputs.Layers is empty.
func (in Inputs) Available() []string {
	var out []string
	for _, l := range AllLayers {
		if len(in.missing(l)) == 0 {
			out = append(out, l)
		}
	}
	return out
}

// selectLayers returns the layers to run in AllLayers order and whether they were defaulted, or
// an *InputError.
func (in Inputs) selectLayers() ([]string, bool, error) {
	if len(in.Layers) == 0 {
		return in.Available(), true, nil
	}
	for _, l := range in.Layers {
		if !slices.Contains(AllLayers, l) {
			return nil, false, &InputError{Layer: l}
		}
		if m := in.missing(l); len(m) > 0 {
			return nil, false, &InputError{Layer: l, Missing: m}
		}
	}
	var out []string
	for _, l := range AllLayers {
		if slices.Contains(in.Layers, l) {
			out = append(out, l)
		}
	}
	return out, false, nil
}
