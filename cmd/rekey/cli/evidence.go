package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/storagemode"
)

// strategyHelp is the part of `rekey run --help` that says how auto decides and when a pass is
// suspicious.
const strategyHelp = `Strategies:
  rewrite (alias replace)  no-op patch with a resourceVersion precondition: the API server rewrites
                           exactly the objects stored under an old key (KMS v2, aescbc, ...)
  annotate                 sets the encryption-key-rotation-time annotation on every object
                           (KMS v1, where no-op writes rewrite nothing)
  auto                     decided from evidence of the provider that writes the resources:
                             1. etcd (--etcd-endpoints): the newest stored values of each resource;
                             2. the API server's /metrics: writes per resource and transformer
                                prefix, KMS v2 key-ID series;
                           KMS v1 anywhere -> annotate; KMS v2, aescbc, aesgcm, secretbox -> rewrite;
                           identity (plain text) -> rewrite, with a warning that the resources are
                           not encrypted. Without evidence: rewrite on Kubernetes >= 1.31, else
                           annotate, with a WARNING (a 1.31+ cluster may still use KMS v1).
                           The summary (text and JSON) shows the rule and the evidence.

Suspicious passes: with --kms-key-id rekey knows the key was rotated to its primary version. A pass
that then finds objects current and rewrites none is SUSPICIOUS (exit 1, with the likely causes:
API servers not yet on the new version, KMS v1, resources not covered by the encryption config, a
previous run) unless rekey has evidence that they are already under the primary version: an etcd
scan of the resources after the pass (--etcd-endpoints: every value KMS v2 under the primary;
this scan decides whenever it is possible), or direct adoption evidence from the gate before the
pass (etcd canary, /metrics key-ID series, or effect canaries; a settle delay is not evidence).
Without --kms-key-id there is no known rotation and 0 rewritten is not judged.`

// runReport is what `rekey run` prints: the engine's summary, how the strategy was chosen and the
// verdict on the pass. In JSON the summary's fields stay at the top level.
type runReport struct {
	reencrypt.Summary
	StrategyDecision *storagemode.Decision `json:"strategyDecision,omitempty"`
	Verdict          *storagemode.Verdict  `json:"verdict,omitempty"`
}

func printRunReport(w io.Writer, format string, r runReport) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("write summary: %w", err)
		}
		return nil
	}
	if err := printSummary(w, format, r.Summary); err != nil {
		return err
	}
	var b strings.Builder
	if d := r.StrategyDecision; d != nil {
		fmt.Fprintf(&b, "strategy %s chosen by %s (requested %s): %s\n", d.Strategy, d.Rule, d.Requested, d.Reason)
		for _, o := range d.Writers {
			if o.Detail != "" {
				fmt.Fprintf(&b, "  evidence: %s: %s\n", o.Resource, o.Detail)
			}
		}
		for _, u := range d.Unavailable {
			fmt.Fprintf(&b, "  no evidence from %s\n", u)
		}
		for _, x := range d.Warnings {
			fmt.Fprintf(&b, "WARNING: %s\n", x)
		}
	}
	if v := r.Verdict; v != nil && v.Status != storagemode.StatusNotJudged {
		if v.Suspicious() {
			fmt.Fprintf(&b, "SUSPICIOUS: %s\nlikely causes:\n", v.Message)
			for _, c := range v.Causes {
				fmt.Fprintf(&b, "  - %s\n", c)
			}
		} else {
			fmt.Fprintf(&b, "verdict: %s\n", v.Message)
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}

// kvOrNil returns c as a clientv3.KV, or a nil interface (not a typed nil) when c is nil.
func kvOrNil(c *clientv3.Client) clientv3.KV {
	if c == nil {
		return nil
	}
	return c
}
