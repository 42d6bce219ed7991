package handler

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/kubeaccess"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/state"
)

// Deps are what the handlers reach the world through. Config, KMS, Clusters and Run are
// required.
type Deps struct {
	Config config.Config
	// KMS answers DescribeKey for the configured keys (aliases, primary versions).
	KMS kms.Client
	// Clusters opens each watched cluster: its REST configuration and its state store.
	Clusters ClusterOpener
	// Notifier delivers alerts and recovery notices (nil: log only).
	Notifier Notifier
	// Run runs one rotation job.
	Run RunJob
	// Clock judges notBefore and deadlines (default the real clock).
	Clock clock.PassiveClock
	// Logger receives one line per decision, per job and per invocation (default: discard).
	Logger *zerolog.Logger
	// CountSecrets counts a cluster's Secrets for the critical KMS alerts (default CountSecrets:
	// one bounded LIST; see dependents.go).
	CountSecrets SecretCounter
}

func (d Deps) validate() error {
	switch {
	case len(d.Config.Targets) == 0:
		return fmt.Errorf("handler: the configuration has no targets")
	case d.KMS == nil:
		return fmt.Errorf("handler: no KMS client")
	case d.Clusters == nil:
		return fmt.Errorf("handler: no cluster opener")
	case d.Run == nil:
		return fmt.Errorf("handler: no job runner")
	}
	return nil
}

func (d *Deps) defaults() {
	if d.Clock == nil {
		d.Clock = clock.RealClock{}
	}
	if d.Logger == nil {
		l := zerolog.Nop()
		d.Logger = &l
	}
	if d.CountSecrets == nil {
		d.CountSecrets = CountSecrets
	}
}

// Notifier delivers a notice (notify.Sender). A *notify.DeliveryError with Temporary set is a
// transient failure.
type Notifier interface {
	Send(ctx context.Context, n policy.Notice) error
}

// Cluster is one opened cluster.
type Cluster struct {
	// ID is the cluster ID.
	ID string
	// Rest reaches its API server (for the job).
	Rest *rest.Config
	// Store holds its state in rekey-system.
	Store *state.Store
}

// ClusterOpener opens a cluster for one invocation.
type ClusterOpener interface {
	Open(ctx context.Context, clusterID string) (Cluster, error)
}

// KubeClusters opens clusters through a kubeaccess.Source: the REST configuration from the
// cluster's kubeconfig file or from CS, and a state.Store on a clientset built from it.
type KubeClusters struct {
	Source *kubeaccess.Source
	// StateOptions adjust every Store (clock, field manager...).
	StateOptions []state.Option
}

// Open implements ClusterOpener.
func (k KubeClusters) Open(ctx context.Context, clusterID string) (Cluster, error) {
	cfg, err := k.Source.RESTConfig(ctx, clusterID)
	if err != nil {
		return Cluster{}, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return Cluster{}, fmt.Errorf("client of cluster %s: %w", clusterID, err)
	}
	st, err := state.New(cs, clusterID, k.StateOptions...)
	if err != nil {
		return Cluster{}, fmt.Errorf("state of cluster %s: %w", clusterID, err)
	}
	return Cluster{ID: clusterID, Rest: cfg, Store: st}, nil
}

// Status is a job's outcome status, as shared/job reports it.
type Status string

// Job statuses.
const (
	// StatusDone: every Secret is re-encrypted under the version and the verifier passed.
	StatusDone Status = "done"
	// StatusPartial: the deadline came first; the checkpoint lets the next invocation resume.
	StatusPartial Status = "partial"
	// StatusBusy: another invocation holds the cluster's Lease.
	StatusBusy Status = "busy"
	// StatusRefused: the KMS guard refused to run (the key is Disabled or PendingDeletion).
	StatusRefused Status = "refused"
	// StatusFailed: the job ran and failed; it stays pending.
	StatusFailed Status = "failed"
	// StatusSuspicious: the run's evidence contradicts itself; a human must look.
	StatusSuspicious Status = "suspicious"
)

// JobRequest is one job to run on one opened cluster.
type JobRequest struct {
	// Job is the pending job as stored.
	Job state.JobRecord
	// Target is the cluster's configured target (its key as written in REKEY_TARGETS).
	Target config.Target
	// Cluster is the opened cluster.
	Cluster Cluster
	// Holder names the invocation (the FC request id): the Lease and checkpoint holder.
	Holder string
	// StopMargin: the job stops taking work this long before ctx's deadline.
	StopMargin time.Duration
	// Logger is the invocation's logger.
	Logger *zerolog.Logger
}

// JobOutcome is what a job reports.
type JobOutcome struct {
	Status Status `json:"status"`
	Reason string `json:"reason,omitempty"`
	// VerifiedVersion is the key version every Secret was verified under (Status done).
	VerifiedVersion string `json:"verifiedVersion,omitempty"`
	// NoProgress says why a partial job moved its checkpoint nowhere in this invocation; Stalled
	// counts such invocations in a row (a notice goes out at StalledNotice).
	NoProgress string `json:"noProgress,omitempty"`
	Stalled    int    `json:"stalled,omitempty"`
	// Detail is the job's full outcome (summary, evidence, verifier report), for the result.
	Detail any `json:"detail,omitempty"`
}

// RunJob runs one job. It returns an error only for transient or unexpected faults; everything
// the job decided is in the outcome.
type RunJob func(ctx context.Context, req JobRequest) (JobOutcome, error)
