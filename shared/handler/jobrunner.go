package handler

import (
	"context"

	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/actiontrail"
	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/job"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// JobRunner returns the RunJob of production: job.Run, checkpointed in the cluster's state under
// its Lease, with the configuration's strategy and concurrency. The adoption gate's settle delay
// (used only when no direct evidence of adoption is available) is REKEY_GATE_SETTLE (default
// upstream's 3 + N + M = 9 minutes), not REKEY_SETTLE, which only delays a job's start after an
// event. trail may be nil (no audit layer).
func JobRunner(cfg config.Config, k kms.Client, trail actiontrail.Lookuper, clk clock.WithTicker) RunJob {
	return func(ctx context.Context, req JobRequest) (JobOutcome, error) {
		spec := job.Spec{
			Cluster:     req.Job.Cluster,
			KeyID:       req.Job.Key,
			Version:     req.Job.Version,
			Reason:      req.Job.Reason,
			Baseline:    req.Job.Baseline,
			Strategy:    reencrypt.Strategy(cfg.Strategy),
			Concurrency: cfg.Concurrency,
			// Off-peak mode runs jobs only inside REKEY_WINDOW, the maintenance window: full
			// speed. Immediate mode runs them at any hour: adaptive (package pace).
			MaxSpeed: cfg.RunMode == config.RunOffPeak,
		}
		deps := job.Deps{
			Rest:       req.Cluster.Rest,
			KMS:        k,
			State:      req.Cluster.Store,
			Holder:     req.Holder,
			Logger:     req.Logger,
			Clock:      clk,
			StopMargin: req.StopMargin,
			Adoption:   job.Adoption{Settle: cfg.GateSettle},
		}
		if trail != nil {
			deps.Trail = trail
		}
		out, err := job.Run(ctx, spec, deps)
		if err != nil {
			return JobOutcome{}, err
		}
		return JobOutcome{Status: Status(out.Status), Reason: out.Reason, VerifiedVersion: out.VerifiedVersion,
			NoProgress: out.NoProgress, Stalled: out.Stalled, Detail: out}, nil
	}
}
