package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/pflag"

	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/verify"
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

// gatedReport is runReport with the adoption evidence and, with --verify, the verifier's report;
// in JSON the summary's fields stay at the top level, the evidence is "adoption" and the report
// "verify".
type gatedReport struct {
	runReport
	Adoption *adoption.Evidence `json:"adoption,omitempty"`
	Verify   *verify.Report     `json:"verify,omitempty"`
}

// printGatedReport prints the run report, which evidence established adoption and the verifier's
// report when it ran.
func printGatedReport(w io.Writer, format string, r runReport, ev *adoption.Evidence, vr *verify.Report) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(gatedReport{runReport: r, Adoption: ev, Verify: vr}); err != nil {
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
	if vr != nil {
		if _, err := fmt.Fprintln(w); err != nil {
			return fmt.Errorf("write summary: %w", err)
		}
		return vr.WriteText(w)
	}
	return nil
}
