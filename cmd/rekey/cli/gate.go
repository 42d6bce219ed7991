package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/apimetrics"
	"github.com/rekey-dev/rekey/shared/kms"
)

// adoptionFlags configure the adoption gate of `rekey run --kms-key-id`.
type adoptionFlags struct {
	mode            string
	settle, timeout time.Duration
	confirmations   int
	nudge           bool
}

func (f *adoptionFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.mode, "adoption", string(adoption.Auto), "with --kms-key-id, before the pass wait until the API servers encrypt with the key's primary version, proved by: auto (best available), etcd (canary read back from etcd: --etcd-endpoints), metrics (/metrics key-ID series), canary (effect canaries in namespace "+adoption.DefaultNamespace+"), settle (a delay), off")
	fs.DurationVar(&f.settle, "adoption-settle", adoption.DefaultSettle, "the delay after the rotation when no direct evidence is possible (upstream: 3 + N + M minutes)")
	fs.DurationVar(&f.timeout, "adoption-timeout", adoption.DefaultTimeout, "give up waiting for adoption after this long")
	fs.IntVar(&f.confirmations, "adoption-confirmations", adoption.DefaultConfirmations, "consecutive confirming samples that prove adoption (more for more API server replicas)")
	fs.BoolVar(&f.nudge, "adoption-nudge", true, "GET /readyz while waiting, which makes the API servers ask the KMS plugin for its key sooner")
}

func (f *adoptionFlags) validate() error {
	if _, err := adoption.ParseKind(f.mode); err != nil {
		return &usageError{fmt.Errorf("--adoption: %w", err)}
	}
	if f.settle <= 0 || f.timeout <= 0 {
		return usagef("--adoption-settle and --adoption-timeout must be positive")
	}
	if f.confirmations < 1 || f.confirmations > 1000 {
		return usagef("--adoption-confirmations must be between 1 and 1000, not %d", f.confirmations)
	}
	return nil
}

// gateAdoption waits until the API servers encrypt with the primary version of --kms-key-id (the
// pass follows a known rotation). It returns nil evidence without a key or on a dry run (which
// writes nothing, so there is nothing to gate), and prints the evidence to stderr.
func (f *runFlags) gateAdoption(ctx context.Context, cfg *rest.Config, kv clientv3.KV, log *zerolog.Logger, stderr io.Writer) (*adoption.Evidence, error) {
	if err := f.adoption.validate(); err != nil {
		return nil, err
	}
	mode, _ := adoption.ParseKind(f.adoption.mode)
	if f.kms.keyID == "" || f.dryRun {
		return nil, nil
	}
	if mode == adoption.Etcd && kv == nil {
		return nil, usagef("--adoption etcd needs --etcd-endpoints")
	}
	c, _, err := f.kms.client(os.Getenv)
	if err != nil || c == nil {
		return nil, err
	}
	primary, predecessor, rotatedAt, err := keyVersions(ctx, c, f.kms.keyID)
	if err != nil {
		return nil, err
	}
	gcfg := adoption.FreshConnections(cfg)
	cs, err := kubernetes.NewForConfig(gcfg)
	if err != nil {
		return nil, fmt.Errorf("adoption gate client: %w", err)
	}
	disco, err := discovery.NewDiscoveryClientForConfig(gcfg)
	if err != nil {
		return nil, fmt.Errorf("adoption gate client: %w", err)
	}
	g := adoption.Gate{
		Mode:          mode,
		Secrets:       cs.CoreV1().Secrets(adoption.DefaultNamespace),
		EtcdPrefix:    f.etcd.prefix,
		Metrics:       apimetrics.Scraper{Client: disco.RESTClient()},
		Predecessor:   predecessor,
		RotatedAt:     rotatedAt,
		Settle:        f.adoption.settle,
		Timeout:       f.adoption.timeout,
		Confirmations: f.adoption.confirmations,
		Log:           log,
	}
	if kv != nil {
		g.Etcd = kv
	}
	if f.adoption.nudge {
		g.Nudge = adoption.ReadyzNudge(disco.RESTClient())
	}
	fmt.Fprintf(stderr, "rekey: waiting until the API servers encrypt with key version %s (adoption evidence: %s, up to %s)\n", primary, mode, f.adoption.timeout)
	ev, err := g.Wait(ctx, primary)
	if err != nil {
		return nil, fmt.Errorf("adoption gate: %w", err)
	}
	fmt.Fprintf(stderr, "rekey: %s\n", ev)
	for _, n := range ev.Notes {
		fmt.Fprintf(stderr, "rekey: warning: %s\n", n)
	}
	return &ev, nil
}

// keyVersions returns the key's primary version, the version created just before it ("" when it
// cannot be told) and when the primary was created.
func keyVersions(ctx context.Context, c kms.Client, keyID string) (primary, predecessor string, created time.Time, err error) {
	m, err := c.DescribeKey(ctx, keyID)
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("read the primary version of key %s: %w", keyID, err)
	}
	if m.PrimaryKeyVersion == "" {
		return "", "", time.Time{}, fmt.Errorf("key %s reports no primary version", keyID)
	}
	versions, err := c.ListKeyVersions(ctx, keyID)
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("list the versions of key %s: %w", keyID, err)
	}
	predecessor, created = predecessorOf(versions, m.PrimaryKeyVersion)
	if created.IsZero() {
		created = m.LastRotationDate
	}
	return m.PrimaryKeyVersion, predecessor, created, nil
}

// predecessorOf returns the version created last before primary ("" when there is none or two
// share its creation time) and primary's creation time.
func predecessorOf(versions []kms.KeyVersion, primary string) (string, time.Time) {
	var created time.Time
	for _, v := range versions {
		if v.KeyVersionID == primary {
			created = v.CreationDate
		}
	}
	if created.IsZero() {
		return "", time.Time{}
	}
	var before []kms.KeyVersion
	for _, v := range versions {
		if v.KeyVersionID != primary && v.CreationDate.Before(created) {
			before = append(before, v)
		}
	}
	if len(before) == 0 {
		return "", created
	}
	sort.SliceStable(before, func(i, j int) bool { return before[i].CreationDate.Before(before[j].CreationDate) })
	last := before[len(before)-1]
	if len(before) > 1 && before[len(before)-2].CreationDate.Equal(last.CreationDate) {
		return "", created
	}
	return last.KeyVersionID, created
}

// gatedReport is runReport with the adoption evidence; in JSON the summary's fields stay at the
// top level and the evidence is "adoption".
type gatedReport struct {
	runReport
	Adoption *adoption.Evidence `json:"adoption,omitempty"`
}

// printGatedReport prints the run report and which evidence established adoption.
func printGatedReport(w io.Writer, format string, r runReport, ev *adoption.Evidence) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(gatedReport{runReport: r, Adoption: ev}); err != nil {
			return fmt.Errorf("write summary: %w", err)
		}
		return nil
	}
	if err := printRunReport(w, format, r); err != nil {
		return err
	}
	if ev != nil {
		if _, err := fmt.Fprintf(w, "adoption: %s\n", ev); err != nil {
			return fmt.Errorf("write summary: %w", err)
		}
	}
	return nil
}
