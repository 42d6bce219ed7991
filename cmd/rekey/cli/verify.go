package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/metadata"

	"github.com/rekey-dev/rekey/shared/actiontrail"
	"github.com/rekey-dev/rekey/shared/cluster"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/verify"
)

type verifyFlags struct {
	kubeconfig, context      string
	etcd                     etcdFlags
	resources                []string
	expectKeyID              string
	convergence              bool
	audit                    bool
	auditRole, trailEndpoint string
	auditSince               time.Duration
	output                   string
	kms                      kmsFlags
}

func newVerifyCommand(stdout io.Writer) *cobra.Command {
	f := &verifyFlags{}
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Prove that Secrets are encrypted under the current KMS key version",
		Long: `verify checks the envelope layer by layer and prints one PASS/FAIL report:

  kms          key Enabled, primary version, rotation policy, canary GenerateDataKey -> Decrypt
  storage      every value in etcd is a KMS v2 object under the primary version (needs etcd access)
  convergence  a rewrite pass changes nothing (--convergence; managed clusters without etcd access)
  apiserver    /readyz/kms-providers (needs a kubeconfig)
  audit        ActionTrail shows the cluster's KMS role using the key since the rotation

KMS and ActionTrail credentials come from ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET
and ALIBABA_CLOUD_SECURITY_TOKEN. Exit status: 0 PASS, 1 FAIL, 2 usage or configuration error.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runVerify(cmd.Context(), f, stdout) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&f.context, "context", "", "kubeconfig context")
	f.etcd.register(fs)
	fs.StringSliceVar(&f.resources, "resources", []string{"secrets"}, "resources to check")
	fs.StringVar(&f.expectKeyID, "expect-key-id", "", "KMS v2 key ID values must carry when no --kms-key-id is given")
	fs.BoolVar(&f.convergence, "convergence", false, "run a rewrite pass and require that it changes nothing")
	fs.BoolVar(&f.audit, "audit", true, "check ActionTrail for the cluster's use of the key (with --kms-key-id)")
	fs.StringVar(&f.auditRole, "audit-role", verify.DefaultAuditRole, "RAM role the cluster's KMS plugin assumes")
	fs.DurationVar(&f.auditSince, "audit-since", 0, "look this far back in ActionTrail (default: since the key's last rotation)")
	fs.StringVar(&f.trailEndpoint, "actiontrail-endpoint", "", "ActionTrail endpoint host[:port] (default actiontrail.<region>.aliyuncs.com)")
	fs.StringVarP(&f.output, "output", "o", "text", "text or json")
	f.kms.register(fs)
	return cmd
}

func runVerify(ctx context.Context, f *verifyFlags, stdout io.Writer) error {
	if f.output != "text" && f.output != "json" {
		return usagef("--output must be text or json, not %q", f.output)
	}
	in := verify.Inputs{Resources: f.resources, ExpectKeyID: f.expectKeyID, AuditRole: f.auditRole}
	kmsClient, kmsCfg, err := f.kms.client(os.Getenv)
	if err != nil {
		return err
	}
	in.KMS, in.KeyID = kmsClient, f.kms.keyID
	if kmsClient != nil && f.audit {
		trail, err := actiontrail.NewSDKClient(actiontrail.Config{Region: kmsCfg.Region, Endpoint: f.trailEndpoint, Scheme: kmsCfg.Scheme, Credentials: kmsCfg.Credentials})
		if err != nil {
			return &usageError{err}
		}
		in.Trail = trail
		if f.auditSince > 0 {
			in.AuditSince = time.Now().Add(-f.auditSince)
		}
	}
	if f.etcd.given() {
		cli, err := f.etcd.client()
		if err != nil {
			return err
		}
		defer cli.Close()
		in.Etcd = cli
	}
	kubeWanted := f.kubeconfig != "" || os.Getenv("KUBECONFIG") != "" || f.convergence
	if kubeWanted {
		cfg, err := cluster.Load(cluster.Connection{Kubeconfig: f.kubeconfig, Context: f.context, UserAgent: "rekey-verify"})
		if err != nil {
			return err
		}
		disco, err := discovery.NewDiscoveryClientForConfig(cfg)
		if err != nil {
			return fmt.Errorf("discovery client: %w", err)
		}
		in.APIServer = disco.RESTClient()
		if f.convergence {
			targets, err := cluster.ResolveTargets(disco, f.resources)
			if err != nil {
				return &usageError{err}
			}
			meta, err := metadata.NewForConfig(cfg)
			if err != nil {
				return fmt.Errorf("metadata client: %w", err)
			}
			if in.Convergence, err = reencrypt.New(meta, reencrypt.Options{Targets: targets, Strategy: reencrypt.Rewrite}); err != nil {
				return &usageError{err}
			}
		}
	}
	if in.KMS == nil && in.Etcd == nil && in.APIServer == nil {
		return usagef("nothing to verify: give --kms-key-id, --etcd-endpoints and/or a kubeconfig")
	}
	r, err := verify.Verify(ctx, in)
	if err != nil {
		return err
	}
	if f.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	} else if err := r.WriteText(stdout); err != nil {
		return err
	}
	if r.Verdict == verify.Fail {
		return &exitError{code: ExitFailed}
	}
	return nil
}
