package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/shared/actiontrail"
	"github.com/rekey-dev/rekey/shared/cluster"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/replicas"
	"github.com/rekey-dev/rekey/shared/verify"
)

type verifyFlags struct {
	kubeconfig, context  string
	etcd                 etcdFlags
	resources            []string
	expectKeyID          string
	layers               []string
	convergence          bool
	audit                bool
	auditRole, auditUser string
	trailEndpoint        string
	auditSince           time.Duration
	output               string
	kms                  kmsFlags
	layersSet            bool // --layers given
	layerSwitchesSet     bool // --convergence or --audit given
	auditRoleSet         bool
}

const verifyLong = `verify checks the envelope layer by layer and prints one PASS/FAIL report:

  kms          key Enabled, primary version, rotation policy, canary GenerateDataKey -> Decrypt
               (needs --kms-key-id)
  storage      every value of --resources in etcd is a KMS v2 object under the primary version
               (needs --etcd-endpoints; self-managed clusters). A resource with no value FAILs
               (wrong etcd, wrong --etcd-prefix, the events etcd), and so do plaintext (identity)
               values, with or without a key.
  convergence  a rewrite pass changes nothing (needs a kubeconfig; managed clusters without etcd)
  apiserver    /readyz/kms-providers (needs a kubeconfig)
  audit        ActionTrail shows the cluster's KMS identity (--audit-role, or --audit-user for a RAM
               user) using the key since the rotation, at most 90 days back (needs --kms-key-id)

--layers lists the layers to run; by default every layer whose inputs are given runs (convergence
only with --convergence, audit unless --audit=false), and the report names them. A layer listed
without its input is a usage error. PASS needs no layer to FAIL and at least one of storage,
convergence to PASS: kms and apiserver alone prove nothing about what is stored, and audit
corroborates (the API server's KMS identity used the primary version) but never proves that every
stored object was rewritten. A convergence pass PASSes only when it listed objects, changed none,
and every API server replica (counted from their identity Leases in kube-system) served part of it.
A layer that could not check (throttled, timed out, unreachable) is UNKNOWN, and so is the report
when nothing FAILs: check again later. An audit window without events is a WARN (ActionTrail
delivers events minutes late).

Resources are "name" or "name.group" (deployments.apps); with a kubeconfig they are resolved
through discovery, and each is read from where the API server stores it under --etcd-prefix
(deployments.apps under /registry/deployments/, services under /registry/services/specs/, custom
resources under /registry/<group>/<resource>/).

KMS and ActionTrail credentials come from ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET
and ALIBABA_CLOUD_SECURITY_TOKEN. Exit status: 0 PASS, 1 FAIL, 2 usage or configuration error.`

func newVerifyCommand(stdout io.Writer) *cobra.Command {
	f := &verifyFlags{}
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Prove that Secrets are encrypted under the current KMS key version",
		Long:  verifyLong,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs := cmd.Flags()
			f.layersSet = fs.Changed("layers")
			f.layerSwitchesSet = fs.Changed("convergence") || fs.Changed("audit")
			f.auditRoleSet = fs.Changed("audit-role")
			return runVerify(cmd.Context(), f, stdout)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&f.context, "context", "", "kubeconfig context")
	f.etcd.register(fs)
	fs.StringSliceVar(&f.resources, "resources", []string{"secrets"}, "resources to check: name or name.group, e.g. secrets,deployments.apps")
	fs.StringVar(&f.expectKeyID, "expect-key-id", "", "KMS v2 key ID values must carry when no --kms-key-id is given")
	fs.StringSliceVar(&f.layers, "layers", nil, "layers to run: "+strings.Join(verify.AllLayers, ",")+" (default: every layer whose inputs are given)")
	fs.BoolVar(&f.convergence, "convergence", false, "add the convergence layer to the default layers: a rewrite pass must change nothing")
	fs.BoolVar(&f.audit, "audit", true, "include the audit layer in the default layers (with --kms-key-id)")
	fs.StringVar(&f.auditRole, "audit-role", verify.DefaultAuditRole, "RAM role the cluster's KMS plugin assumes (the identity expected in ActionTrail)")
	fs.StringVar(&f.auditUser, "audit-user", "", "RAM user the cluster's KMS plugin calls KMS as, instead of --audit-role")
	fs.DurationVar(&f.auditSince, "audit-since", 0, "look this far back in ActionTrail (default: since the key's last rotation; at most 90 days)")
	fs.StringVar(&f.trailEndpoint, "actiontrail-endpoint", "", "ActionTrail endpoint host[:port] (default the region's VPC endpoint, or actiontrail.<region>.aliyuncs.com with --kms-public-endpoint)")
	fs.StringVarP(&f.output, "output", "o", "text", "text or json")
	f.kms.register(fs)
	return cmd
}

// layerInputs names, per layer, the flag that gives its input.
var layerInputs = map[string]string{
	verify.LayerKMS:         "--kms-key-id",
	verify.LayerStorage:     "--etcd-endpoints",
	verify.LayerConvergence: "a kubeconfig (--kubeconfig or $KUBECONFIG)",
	verify.LayerAPIServer:   "a kubeconfig (--kubeconfig or $KUBECONFIG)",
	verify.LayerAudit:       "--kms-key-id",
}

// kubeconfigGiven reports whether the user named a kubeconfig.
func (f *verifyFlags) kubeconfigGiven() bool {
	return f.kubeconfig != "" || os.Getenv("KUBECONFIG") != ""
}

// wantedLayers returns the layers to run and whether they were listed explicitly. Listed layers
// are checked against the flags that give their inputs.
func (f *verifyFlags) wantedLayers() ([]string, bool, error) {
	if !f.layersSet {
		var out []string
		add := func(ok bool, l string) {
			if ok {
				out = append(out, l)
			}
		}
		add(f.kms.keyID != "", verify.LayerKMS)
		add(f.etcd.given(), verify.LayerStorage)
		add(f.convergence, verify.LayerConvergence)
		add(f.kubeconfigGiven() || f.convergence, verify.LayerAPIServer)
		add(f.kms.keyID != "" && f.audit, verify.LayerAudit)
		return out, false, nil
	}
	if f.layerSwitchesSet {
		return nil, true, usagef("--layers lists every layer to run: leave out --convergence and --audit")
	}
	var out []string
	for _, raw := range f.layers {
		l := strings.ToLower(strings.TrimSpace(raw))
		if l == "" {
			continue
		}
		if !slices.Contains(verify.AllLayers, l) {
			return nil, true, usagef("--layers: unknown layer %q (want %s)", raw, strings.Join(verify.AllLayers, ", "))
		}
		var have bool
		switch l {
		case verify.LayerKMS, verify.LayerAudit:
			have = f.kms.keyID != ""
		case verify.LayerStorage:
			have = f.etcd.given()
		default:
			// A kubeconfig may also come from ~/.kube/config: loading it decides.
			have = true
		}
		if !have {
			return nil, true, usagef("layer %s needs %s", l, layerInputs[l])
		}
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return nil, true, usagef("--layers: no layer given (want some of %s)", strings.Join(verify.AllLayers, ", "))
	}
	return out, true, nil
}

func runVerify(ctx context.Context, f *verifyFlags, stdout io.Writer) error {
	if f.output != "text" && f.output != "json" {
		return usagef("--output must be text or json, not %q", f.output)
	}
	if f.auditUser != "" && f.auditRoleSet {
		return usagef("give --audit-role or --audit-user, not both")
	}
	if f.etcd.given() {
		if err := f.etcd.validate(); err != nil {
			return err
		}
	}
	layers, explicit, err := f.wantedLayers()
	if err != nil {
		return err
	}
	if len(layers) == 0 {
		return usagef("nothing to verify: give --kms-key-id, --etcd-endpoints and/or a kubeconfig")
	}
	want := func(l string) bool { return slices.Contains(layers, l) }
	in := verify.Inputs{ExpectKeyID: f.expectKeyID, AuditRole: f.auditRole, AuditUser: f.auditUser}
	if f.auditUser != "" {
		in.AuditRole = ""
	}
	if explicit {
		in.Layers = layers
	}
	if want(verify.LayerKMS) || want(verify.LayerAudit) || (want(verify.LayerStorage) && f.kms.keyID != "") {
		kmsClient, kmsCfg, err := f.kms.client(os.Getenv)
		if err != nil {
			return err
		}
		in.KMS, in.KeyID = kmsClient, f.kms.keyID
		if want(verify.LayerAudit) {
			if in.Trail, err = newTrail(kmsCfg, f.trailEndpoint); err != nil {
				return err
			}
			if f.auditSince > 0 {
				in.AuditSince = time.Now().Add(-f.auditSince)
			}
		}
	}

	// A kubeconfig serves the convergence and apiserver layers, and resolves storage resources
	// through discovery.
	var disco discovery.DiscoveryInterface
	var cfg *rest.Config
	if want(verify.LayerConvergence) || want(verify.LayerAPIServer) || (want(verify.LayerStorage) && f.kubeconfigGiven()) {
		cfg, err = cluster.Load(cluster.Connection{Kubeconfig: f.kubeconfig, Context: f.context, UserAgent: "rekey-verify"})
		if err != nil {
			if explicit && !f.kubeconfigGiven() {
				var needy []string
				for _, l := range []string{verify.LayerConvergence, verify.LayerAPIServer} {
					if want(l) {
						needy = append(needy, l)
					}
				}
				return usagef("layer %s needs %s: %v", strings.Join(needy, " and "), layerInputs[verify.LayerAPIServer], err)
			}
			return err
		}
		d, err := discovery.NewDiscoveryClientForConfig(cfg)
		if err != nil {
			return fmt.Errorf("discovery client: %w", err)
		}
		disco = d
		if want(verify.LayerAPIServer) {
			in.APIServer = d.RESTClient()
		}
	}
	if want(verify.LayerConvergence) {
		targets, err := cluster.ResolveTargets(disco, f.resources)
		if err != nil {
			return &usageError{err}
		}
		meta, err := metadata.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("metadata client: %w", err)
		}
		// The pass is spread over every API server replica (one connection each): the layer
		// PASSes only when every replica served part of it.
		set, err := replicas.Discover(ctx, cfg, replicas.Options{})
		if err != nil {
			return err
		}
		defer set.Close()
		in.Replicas = set
		if in.Convergence, err = reencrypt.New(meta, reencrypt.Options{Targets: targets, Strategy: reencrypt.Rewrite, Routes: set.Routes()}); err != nil {
			return &usageError{err}
		}
	}
	if want(verify.LayerStorage) {
		if in.Resources, err = storageResources(disco, f.resources); err != nil {
			return err
		}
		etcdClient, err := f.etcd.client()
		if err != nil {
			return err
		}
		defer etcdClient.Close()
		if err := reachable(ctx, etcdClient, f.etcd.endpoints); err != nil {
			return err
		}
		in.Etcd, in.EtcdPrefix, in.EtcdEndpoints = etcdClient, f.etcd.prefix, f.etcd.endpoints
	}

	r, err := verify.Verify(ctx, in)
	var inputErr *verify.InputError
	if errors.As(err, &inputErr) {
		return &usageError{err}
	}
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
	if r.Verdict != verify.Pass { // FAIL, or UNKNOWN: a check could not be made
		return &exitError{code: ExitFailed}
	}
	return nil
}

// newTrail builds the ActionTrail client with the KMS client's region, scheme and credentials.
func newTrail(kmsCfg *kms.Config, endpoint string) (actiontrail.Lookuper, error) {
	trail, err := actiontrail.NewSDKClient(actiontrail.Config{Region: kmsCfg.Region, Endpoint: endpoint, PublicEndpoint: kmsCfg.PublicEndpoint,
		Scheme: kmsCfg.Scheme, Credentials: kmsCfg.Credentials})
	if err != nil {
		return nil, &usageError{err}
	}
	return trail, nil
}

// storageResources resolves --resources through discovery when a kubeconfig is given (so
// "deployments" finds apps), and reads "name.group" as it stands otherwise.
func storageResources(disco discovery.DiscoveryInterface, names []string) ([]schema.GroupResource, error) {
	if disco != nil {
		targets, err := cluster.ResolveTargets(disco, names)
		if err != nil {
			return nil, &usageError{err}
		}
		out := make([]schema.GroupResource, 0, len(targets))
		for _, t := range targets {
			out = append(out, t.GVR.GroupResource())
		}
		return out, nil
	}
	var out []schema.GroupResource
	for _, raw := range names {
		name := strings.ToLower(strings.TrimSpace(raw))
		if name == "" {
			continue
		}
		gr := schema.ParseGroupResource(name)
		if !slices.Contains(out, gr) {
			out = append(out, gr)
		}
	}
	if len(out) == 0 {
		return nil, usagef("--resources: no resource given")
	}
	return out, nil
}

// reachable checks that etcd answers before the scans start, so an unreachable endpoint is a
// configuration error with the endpoint named rather than a hang.
func reachable(ctx context.Context, c *clientv3.Client, endpoints []string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.Get(ctx, "/", clientv3.WithCountOnly()); err != nil {
		return usagef("etcd %s does not answer: %v", strings.Join(endpoints, ","), err)
	}
	return nil
}
