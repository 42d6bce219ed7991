package job

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/storagemode"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// evidenceTimeout bounds each evidence read (etcd sample, /metrics, the etcd check after a pass).
const evidenceTimeout = time.Minute

// decideStrategy turns the requested strategy into a concrete one. For auto it gathers evidence:
// an etcd sample when etcd is given, else (or when etcd shows nothing) the API server's /metrics.
// Warnings are said at once, and stay in the decision for the summary.
func (r *runner) decideStrategy(ctx context.Context) (storagemode.Decision, error) {
	in := storagemode.Inputs{Requested: r.spec.Strategy, ServerVersion: r.version}
	if r.spec.Strategy == reencrypt.Auto {
		in.Etcd = etcdEvidence(ctx, r.deps.Etcd, r.deps.EtcdPrefix, r.targets)
		if len(in.Etcd.Observations) == 0 {
			in.Metrics = metricsEvidence(ctx, r.disco.RESTClient(), r.targets)
		}
	}
	d, err := storagemode.Decide(in)
	if err != nil {
		return d, &SpecError{fmt.Errorf("choose strategy: %w", err)}
	}
	for _, w := range d.Warnings {
		r.say(true, "WARNING: %s", w)
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

// judge applies the suspicious rule to a finished pass with totals total. When the pass rewrote
// nothing after a known rotation and etcd is readable, it first scans the target resources against
// the primary version: that scan, the strongest evidence, decides.
func (r *runner) judge(ctx context.Context, strategy reencrypt.Strategy, total reencrypt.Counts, d *storagemode.Decision, rot *storagemode.Rotation) storagemode.Verdict {
	facts := storagemode.PassFacts{Strategy: strategy, DryRun: r.spec.DryRun, Total: total, Rotation: rot, Decision: d}
	if rot == nil || r.spec.DryRun || total.Rewritten > 0 || total.Current == 0 || r.deps.Etcd == nil {
		return storagemode.Judge(facts)
	}
	stored, err := storedCheck(ctx, r.deps.Etcd, r.deps.EtcdPrefix, r.targets, rot.PrimaryVersion)
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

func storedCheck(ctx context.Context, kv clientv3.KV, etcdPrefix string, targets []reencrypt.Target, primary string) (*storagemode.StoredCheck, error) {
	ctx, cancel := context.WithTimeout(ctx, evidenceTimeout)
	defer cancel()
	want := func(v storedvalue.Value) bool { return v.Provider == storedvalue.KMSv2 && v.KeyID == primary }
	sc := &storagemode.StoredCheck{ByClass: map[string]int{}}
	for _, t := range etcdTargets(etcdPrefix, targets) {
		res, err := etcdscan.Scan(ctx, kv, t.Prefix, want, etcdscan.Options{MaxNames: -1})
		if err != nil {
			return nil, fmt.Errorf("scan %s: %w", t.Resource, err)
		}
		sc.Total += res.Total
		sc.Current += res.Matching
		for class, n := range res.RedactedByClass() {
			sc.ByClass[class] += n
		}
		if res.Unreadable > 0 {
			sc.ByClass["unreadable"] += res.Unreadable
		}
	}
	return sc, nil
}
