// Package demo tells rekey's story on the local stack: Secrets encrypted at rest through a KMS v2
// plugin and the Alibaba Cloud KMS API stand-in, a key rotation that leaves them under the old key
// version, `rekey verify` failing, `rekey run`, and `rekey verify` passing with proof from etcd.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/infra/local/seed"
	"github.com/rekey-dev/rekey/infra/local/twin"
	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/kms"
)

// The demo's CLI runs as the user infra/rbac/rekey.yaml binds, as an operator's would: not as an
// administrator, whom API Priority and Fairness exempts and RBAC does not limit.
const (
	cliUser     = "rekey"
	cliRBACFile = "infra/rbac/rekey.yaml"
)

// Config sets up one demo run.
type Config struct {
	// Rekey is the path of the rekey binary to run, as an operator would.
	Rekey string
	// Secrets is the number of Secrets to create.
	Secrets int
	// Out receives the story; the rekey binary writes to Out and Err directly.
	Out, Err io.Writer
}

// Run runs the demo. It returns an error when any step fails or the final proof does not hold.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Rekey == "" {
		return errors.New("demo: path of the rekey binary is required")
	}
	if _, err := os.Stat(cfg.Rekey); err != nil {
		return fmt.Errorf("demo: rekey binary: %w (run make build)", err)
	}
	say := func(format string, a ...any) { fmt.Fprintf(cfg.Out, "\n==> "+format+"\n", a...) }
	note := func(format string, a ...any) { fmt.Fprintf(cfg.Out, "    "+format+"\n", a...) }

	say("starting the Alibaba Cloud KMS API stand-in and rekey's KMS v2 plugin")
	st, err := kmsstack.Start(ctx, kmsstack.Options{})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer st.Stop()
	v1, err := st.PrimaryVersion(ctx)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	note("KMS at %s, key %s, primary version %s", st.Endpoint, st.KeyID, v1)
	note("plugin on %s, calling KMS as the assumed role %s (as on ACK)", st.Socket, kmsstack.PluginRole)

	say("starting etcd and kube-apiserver on loopback; Secrets are encrypted at rest with KMS v2 (provider %q)", kmsstack.ProviderName)
	repo, err := twin.RepoRoot("")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	c, err := controlplane.Start(ctx, controlplane.Options{
		Encryption: &controlplane.Encryption{Providers: []controlplane.Provider{st.Provider(), controlplane.Identity()}},
		Users:      []controlplane.User{{Name: cliUser}},
	})
	if err != nil {
		return fmt.Errorf("demo: start control plane: %w", err)
	}
	defer c.Stop()
	note("API server %s, etcd %s", c.Server, c.EtcdEndpoint)

	restCfg := c.RestConfig(controlplane.AdminUser)
	restCfg.QPS = -1 // no client-side throttling for the set-up
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("demo: client: %w", err)
	}
	say("applying rekey's RBAC (%s) and API Priority and Fairness objects (%s): rekey runs as user %q, in a priority level of its own", cliRBACFile, twin.APFFile, cliUser)
	for _, f := range []string{cliRBACFile, twin.APFFile} {
		if err := twin.ApplyRBAC(ctx, cs, filepath.Join(repo, f), twin.FunctionRoleID); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	namespaces := []string{"payments", "orders", "identity", "platform"}
	say("creating %d Secrets in %s", cfg.Secrets, strings.Join(namespaces, ", "))
	start := time.Now()
	if _, err := seed.Secrets(ctx, cs, seed.Options{Count: cfg.Secrets, Namespaces: namespaces, Size: 256}); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	note("done in %s", time.Since(start).Round(time.Millisecond))
	if err := scan(ctx, cfg.Out, c); err != nil {
		return err
	}

	say("rotating the KMS key: CreateKeyVersion through the Alibaba Cloud SDK")
	v2, err := st.Rotate()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	note("new primary version %s", v2)
	say("waiting until the API server writes with %s (polling /readyz/kms-providers and a canary, no fixed sleep)", v2)
	start = time.Now()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := st.WaitAPIServer(wctx, c, v2); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	note("picked up after %s; existing Secrets are still under %s:", time.Since(start).Round(time.Millisecond), v1)
	if err := scan(ctx, cfg.Out, c); err != nil {
		return err
	}

	kubeconfig := filepath.Join(c.Dir, cliUser+".kubeconfig")
	if err := c.WriteKubeconfig(cliUser, kubeconfig); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	kmsArgs := []string{"--kms-key-id", st.KeyID, "--kms-region", st.Region, "--kms-endpoint", st.Endpoint, "--kms-scheme", "HTTP"}
	verifyArgs := append([]string{"verify", "--kubeconfig", kubeconfig, "--etcd-endpoints", c.EtcdEndpoint, "--audit-role", kmsstack.PluginRole,
		"--actiontrail-endpoint", st.Endpoint}, kmsArgs...)
	env := append(os.Environ(), kms.EnvAccessKeyID+"="+st.Admin.AccessKeyID, kms.EnvAccessKeySecret+"="+st.Admin.AccessKeySecret)
	rekey := func(wantExit int, args ...string) error {
		fmt.Fprintf(cfg.Out, "    $ rekey %s\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, cfg.Rekey, args...)
		cmd.Stdout, cmd.Stderr, cmd.Env = cfg.Out, cfg.Err, env
		err := cmd.Run()
		var ee *exec.ExitError
		code := 0
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			return fmt.Errorf("demo: rekey %s: %w", args[0], err)
		}
		if code != wantExit {
			return fmt.Errorf("demo: rekey %s exited %d, want %d", args[0], code, wantExit)
		}
		return nil
	}

	say("rekey verify: the storage layer must FAIL, the Secrets are stale")
	if err := rekey(1, verifyArgs...); err != nil {
		return err
	}
	say("rekey run: rewrite exactly the stale Secrets through the API server (metadata only, no Secret data)")
	if err := rekey(0, append([]string{"run", "--kubeconfig", kubeconfig}, kmsArgs...)...); err != nil {
		return err
	}
	say("rekey verify --convergence: every layer must PASS; a rewrite pass that changes nothing proves convergence")
	if err := rekey(0, append(verifyArgs, "--convergence")...); err != nil {
		return err
	}
	if err := scan(ctx, cfg.Out, c); err != nil {
		return err
	}
	say("PASS: every Secret in etcd is a KMS v2 object under key version %s; KMS saw %d Encrypt calls in all (KMS v2 reuses its DEK)",
		v2, st.Server().Calls("Encrypt"))
	return nil
}

func scan(ctx context.Context, w io.Writer, c *controlplane.Cluster) error {
	r, err := etcdscan.Scan(ctx, c.Etcd, "/registry/secrets/", nil, etcdscan.Options{})
	if err != nil {
		return fmt.Errorf("demo: scan etcd: %w", err)
	}
	fmt.Fprintf(w, "    etcd scan of /registry/secrets/ at revision %d: %d values\n", r.Revision, r.Total)
	classes := make([]string, 0, len(r.ByClass))
	for k := range r.ByClass {
		classes = append(classes, k)
	}
	sort.Strings(classes)
	for _, k := range classes {
		fmt.Fprintf(w, "      %-60s %6d\n", k, r.ByClass[k])
	}
	return nil
}
