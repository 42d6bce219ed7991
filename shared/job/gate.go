package job

import (
	"context"
	"fmt"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"

	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/apimetrics"
	"github.com/rekey-dev/rekey/shared/storagemode"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// gateNeeded reports whether the adoption gate runs for decision d, saying why when the evidence
// shows KMS v1: the gate's evidence (KMS v2 key IDs in etcd and /metrics, canaries a no-op write
// changes) never appears there, and there is no adoption window to wait for, since KMS v1 encrypts
// each write's fresh DEK with a KMS Encrypt call under the key's primary version at that moment.
func (r *runner) gateNeeded(d storagemode.Decision) bool {
	if r.spec.KeyID == "" || r.spec.DryRun {
		return false
	}
	if d.Shows(storedvalue.KMSv1) {
		r.say(false, "adoption gate skipped: %s shows KMS v1 writing the resources; KMS v1 encrypts every write's DEK with a KMS Encrypt call under the key's primary version, so there is no adoption window to wait for", d.Rule)
		return false
	}
	return true
}

// gate waits until the API servers encrypt with the key's primary version and returns the
// evidence (adoption.Off returns Off evidence at once).
func (r *runner) gate(ctx context.Context) (*adoption.Evidence, error) {
	a := r.deps.Adoption
	primary, predecessor, rotatedAt, err := keyVersions(ctx, r.deps.KMS, r.spec.KeyID)
	if err != nil {
		return nil, err
	}
	gcfg := adoption.FreshConnections(r.deps.Rest)
	cs, err := kubernetes.NewForConfig(gcfg)
	if err != nil {
		return nil, fmt.Errorf("adoption gate client: %w", err)
	}
	disco, err := discovery.NewDiscoveryClientForConfig(gcfg)
	if err != nil {
		return nil, fmt.Errorf("adoption gate client: %w", err)
	}
	g := adoption.Gate{
		Mode:          a.Mode,
		Secrets:       cs.CoreV1().Secrets(adoption.DefaultNamespace),
		EtcdPrefix:    r.deps.EtcdPrefix,
		Metrics:       apimetrics.Scraper{Client: disco.RESTClient()},
		Predecessor:   predecessor,
		RotatedAt:     rotatedAt,
		Settle:        a.Settle,
		Timeout:       a.Timeout,
		Confirmations: a.Confirmations,
		Clock:         r.deps.Clock,
		Log:           &r.log,
	}
	if r.deps.Etcd != nil {
		g.Etcd = r.deps.Etcd
	}
	g.Baseline = r.spec.Baseline
	if !a.NoNudge {
		g.Nudge = adoption.ReadyzNudge(disco.RESTClient())
	}
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = adoption.DefaultTimeout
	}
	r.say(false, "waiting until the API servers encrypt with key version %s (adoption evidence: %s, up to %s)", primary, a.Mode, timeout)
	ev, err := g.Wait(ctx, primary)
	if err != nil {
		return nil, fmt.Errorf("adoption gate: %w", err)
	}
	r.say(false, "%s", ev)
	for _, n := range ev.Notes {
		r.say(true, "warning: %s", n)
	}
	return &ev, nil
}
