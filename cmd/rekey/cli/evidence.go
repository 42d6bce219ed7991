package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/storagemode"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// evidenceTimeout bounds each evidence read (etcd sample, /metrics, the etcd check after a pass).
const evidenceTimeout = time.Minute

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

// decideStrategy turns the requested strategy into a concrete one. For auto it gathers evidence:
// an etcd sample when kv is not nil, else (or when etcd shows nothing) the API server's /metrics
// through rc. Warnings go to stderr at once, and stay in the decision for the summary.
func decideStrategy(ctx context.Context, requested reencrypt.Strategy, version string, targets []reencrypt.Target,
	kv clientv3.KV, etcdPrefix string, rc rest.Interface, stderr io.Writer) (storagemode.Decision, error) {
	in := storagemode.Inputs{Requested: requested, ServerVersion: version}
	if requested == reencrypt.Auto {
		in.Etcd = etcdEvidence(ctx, kv, etcdPrefix, targets)
		if len(in.Etcd.Observations) == 0 && rc != nil {
			in.Metrics = metricsEvidence(ctx, rc, targets)
		}
	}
	d, err := storagemode.Decide(in)
	if err != nil {
		return d, fmt.Errorf("choose strategy: %w", err)
	}
	for _, w := range d.Warnings {
		fmt.Fprintf(stderr, "rekey: WARNING: %s\n", w)
	}
	return d, nil
}

func etcdEvidence(ctx context.Context, kv clientv3.KV, etcdPrefix string, targets []reencrypt.Target) *storagemode.Evidence {
	if kv == nil {
		return &storagemode.Evidence{Source: storagemode.SourceEtcd, Unavailable: "no --etcd-endpoints"}
	}
	ctx, cancel := context.WithTimeout(ctx, evidenceTimeout)
	defer cancel()
	ev, err := storagemode.SampleEtcd(ctx, kv, etcdTargets(etcdPrefix, targets), storagemode.DefaultSample)
	if err != nil {
		ev.Unavailable = err.Error()
	}
	return &ev
}

func etcdTargets(etcdPrefix string, targets []reencrypt.Target) []storagemode.Target {
	out := make([]storagemode.Target, 0, len(targets))
	for _, t := range targets {
		gr := t.GVR.GroupResource()
		out = append(out, storagemode.Target{Resource: gr.String(), Prefix: etcdscan.ResourcePrefix(etcdPrefix, gr)})
	}
	return out
}

func metricsEvidence(ctx context.Context, rc rest.Interface, targets []reencrypt.Target) *storagemode.Evidence {
	ctx, cancel := context.WithTimeout(ctx, evidenceTimeout)
	defer cancel()
	raw, err := storagemode.ReadMetrics(ctx, rc)
	if err != nil {
		why := err.Error()
		if errors.Is(err, storagemode.ErrMetricsForbidden) {
			why += " (grant get on the non-resource URL /metrics)"
		}
		return &storagemode.Evidence{Source: storagemode.SourceMetrics, Unavailable: why}
	}
	resources := make([]string, 0, len(targets))
	for _, t := range targets {
		resources = append(resources, t.GVR.GroupResource().String())
	}
	ev, err := storagemode.FromMetrics(raw, resources)
	if err != nil {
		ev.Unavailable = err.Error()
	}
	return &ev
}

// knownRotation returns the rotation the pass follows: the primary version of --kms-key-id, or nil
// without a key. A key that cannot be described is an error (checkKey ran first and passed, or
// --force was given; a rotation rekey cannot name cannot be judged).
func (f *runFlags) knownRotation(ctx context.Context) (*storagemode.Rotation, error) {
	c, _, err := f.kms.client(os.Getenv)
	if err != nil || c == nil {
		return nil, err
	}
	m, err := c.DescribeKey(ctx, f.kms.keyID)
	if err != nil {
		return nil, fmt.Errorf("read the primary version of key %s: %w", f.kms.keyID, err)
	}
	if m.PrimaryKeyVersion == "" {
		return nil, fmt.Errorf("key %s reports no primary version", f.kms.keyID)
	}
	return &storagemode.Rotation{KeyID: f.kms.keyID, PrimaryVersion: m.PrimaryKeyVersion}, nil
}

// judgePass applies the suspicious rule. When the pass rewrote nothing after a known rotation and
// etcd is readable, it first scans the target resources against the primary version: that scan,
// the strongest evidence, decides.
func judgePass(ctx context.Context, s reencrypt.Summary, d storagemode.Decision, rot *storagemode.Rotation,
	kv clientv3.KV, etcdPrefix string, targets []reencrypt.Target) storagemode.Verdict {
	facts := storagemode.PassFacts{Strategy: s.Strategy, DryRun: s.DryRun, Total: s.Total, Rotation: rot, Decision: &d}
	if rot == nil || s.DryRun || s.Total.Rewritten > 0 || s.Total.Current == 0 || kv == nil {
		return storagemode.Judge(facts)
	}
	stored, err := storedCheck(ctx, kv, etcdPrefix, targets, rot.PrimaryVersion)
	if err != nil {
		v := storagemode.Judge(facts)
		if v.Suspicious() {
			v.Causes = append(v.Causes, "the etcd check after the pass failed: "+err.Error())
		}
		return v
	}
	facts.Stored = stored
	return storagemode.Judge(facts)
}

// gateUnlessKMSv1 runs the adoption gate, except when the strategy evidence shows KMS v1 writing
// the resources: the gate's evidence (KMS v2 key IDs in etcd and /metrics, canaries a no-op write
// changes) never appears there, and there is no adoption window to wait for, since KMS v1 encrypts
// each write's fresh DEK with a KMS Encrypt call under the key's primary version at that moment.
func (f *runFlags) gateUnlessKMSv1(ctx context.Context, d storagemode.Decision, cfg *rest.Config, kv clientv3.KV, log *zerolog.Logger, stderr io.Writer) (*adoption.Evidence, error) {
	if f.kms.keyID != "" && !f.dryRun && d.Shows(storedvalue.KMSv1) {
		fmt.Fprintf(stderr, "rekey: adoption gate skipped: %s shows KMS v1 writing the resources; KMS v1 encrypts every write's DEK with a KMS Encrypt call under the key's primary version, so there is no adoption window to wait for\n", d.Rule)
		return nil, nil
	}
	return f.gateAdoption(ctx, cfg, kv, log, stderr)
}

func storedCheck(ctx context.Context, kv clientv3.KV, etcdPrefix string, targets []reencrypt.Target, primary string) (*storagemode.StoredCheck, error) {
	ctx, cancel := context.WithTimeout(ctx, evidenceTimeout)
	defer cancel()
	want := func(v storedvalue.Value) bool { return v.Provider == storedvalue.KMSv2 && v.KeyID == primary }
	sc := &storagemode.StoredCheck{ByClass: map[string]int{}}
	for _, t := range etcdTargets(etcdPrefix, targets) {
		r, err := etcdscan.Scan(ctx, kv, t.Prefix, want, etcdscan.Options{MaxNames: -1})
		if err != nil {
			return nil, fmt.Errorf("scan %s: %w", t.Resource, err)
		}
		sc.Total += r.Total
		sc.Current += r.Matching
		for class, n := range r.RedactedByClass() {
			sc.ByClass[class] += n
		}
		if r.Unreadable > 0 {
			sc.ByClass["unreadable"] += r.Unreadable
		}
	}
	return sc, nil
}

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
