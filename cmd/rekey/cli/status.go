package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/status"
)

const statusLong = `status shows, for each target (cluster and key), the key's state and primary version, the
version the cluster's Secrets were last verified under, pending jobs and when they may start, the
last outcome (the newest evidence record) and when, the Lease holder when a job is running, and how
long the cluster has been behind the primary version.

Targets, region, account, kubeconfigs and credentials are read as the functions read them
(REKEY_TARGETS, REKEY_REGION, REKEY_ACCOUNT_ID, REKEY_KUBECONFIG_<CLUSTER> or CS, the Alibaba Cloud
credentials chain); flags override. An unreachable cluster is a row with its error.

Exit status: 0 when every row is healthy; 1 when a cluster has been behind the primary version for
longer than --max-behind, its last outcome was not done, its key is not Enabled, or it could not be
reached (so it works as a scheduled check); 2 for a usage or configuration error.`

type statusFlags struct {
	fleet     fleetFlags
	maxBehind time.Duration
	output    string
}

func newStatusCommand(stdout io.Writer) *cobra.Command {
	f := &statusFlags{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show which clusters still hold Secrets under an old key version, and why",
		Long:  statusLong,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.output != "text" && f.output != "json" {
				return usagef("-o %q: want text or json", f.output)
			}
			if f.maxBehind <= 0 {
				return usagef("--max-behind %s: want a positive duration such as 48h", f.maxBehind)
			}
			fl, err := f.fleet.load()
			if err != nil {
				return err
			}
			rep := status.Collect(cmd.Context(), status.Inputs{Targets: fl.cfg.Targets, KMS: fl.deps.KMS, Open: fl.open,
				Clock: clock.RealClock{}, MaxBehind: f.maxBehind, ClusterTimeout: f.fleet.clusterTimeout})
			if f.output == "json" {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return fmt.Errorf("write status: %w", err)
				}
			} else if err := status.WriteTable(stdout, rep); err != nil {
				return err
			}
			if !rep.Healthy {
				return &exitError{code: ExitFailed}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	f.fleet.register(fs)
	fs.DurationVar(&f.maxBehind, "max-behind", status.DefaultMaxBehind, "how long a cluster may be behind the key's primary version before it counts as a problem")
	fs.StringVarP(&f.output, "output", "o", "text", "text or json")
	return cmd
}
