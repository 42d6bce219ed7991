// Package demo tells rekey's story on the local stack: Secrets encrypted at rest, a key rotation
// that leaves them under the old key, a rekey run, and proof from etcd that every Secret moved.
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
	"github.com/rekey-dev/rekey/infra/local/seed"
	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/storedvalue"
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

	key1 := controlplane.NewKey("key1")
	say("starting etcd and kube-apiserver on loopback; Secrets are encrypted at rest with aescbc key %q", key1.Name)
	c, err := controlplane.Start(ctx, controlplane.Options{
		Encryption: &controlplane.Encryption{Providers: []controlplane.Provider{controlplane.AESCBC(key1), controlplane.Identity()}},
	})
	if err != nil {
		return fmt.Errorf("demo: start control plane: %w", err)
	}
	defer c.Stop()
	fmt.Fprintf(cfg.Out, "    API server %s, etcd %s\n", c.Server, c.EtcdEndpoint)

	cs, err := kubernetes.NewForConfig(c.RestConfig("admin"))
	if err != nil {
		return fmt.Errorf("demo: client: %w", err)
	}
	namespaces := []string{"payments", "orders", "identity", "platform"}
	say("creating %d Secrets in %s", cfg.Secrets, strings.Join(namespaces, ", "))
	start := time.Now()
	if _, err := seed.Secrets(ctx, cs, seed.Options{Count: cfg.Secrets, Namespaces: namespaces, Size: 256}); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	fmt.Fprintf(cfg.Out, "    done in %s\n", time.Since(start).Round(time.Millisecond))
	if _, err := scan(ctx, cfg.Out, c, "key1"); err != nil {
		return err
	}

	key2 := controlplane.NewKey("key2")
	say("rotating: %q becomes the write key, %q stays readable (what a KMS key rotation does)", key2.Name, key1.Name)
	if err := c.SetEncryption(controlplane.Encryption{Providers: []controlplane.Provider{controlplane.AESCBC(key2, key1), controlplane.Identity()}}); err != nil {
		return fmt.Errorf("demo: rotate: %w", err)
	}
	if err := c.WaitEncryptionReload(ctx, func(raw []byte) bool { return under(raw, "key2") }); err != nil {
		return fmt.Errorf("demo: wait for the API server to write with key2: %w", err)
	}
	fmt.Fprintln(cfg.Out, "    the API server now writes new Secrets with key2 (checked with a canary read back from etcd)")
	r, err := scan(ctx, cfg.Out, c, "key2")
	if err != nil {
		return err
	}
	fmt.Fprintf(cfg.Out, "    %d Secrets are still under the old key: this is the gap rekey closes\n", r.Stale())

	kubeconfig := filepath.Join(c.Dir, "admin.kubeconfig")
	if err := c.WriteKubeconfig("admin", kubeconfig); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	for i, title := range []string{"rekey run: rewrite the stale Secrets", "rekey run again: a pass that rewrites nothing proves convergence"} {
		say("%s", title)
		fmt.Fprintf(cfg.Out, "    $ rekey run --kubeconfig %s\n", kubeconfig)
		cmd := exec.CommandContext(ctx, cfg.Rekey, "run", "--kubeconfig", kubeconfig)
		cmd.Stdout, cmd.Stderr = cfg.Out, cfg.Err
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("demo: rekey run #%d: %w", i+1, err)
		}
	}
	r, err = scan(ctx, cfg.Out, c, "key2")
	if err != nil {
		return err
	}
	if r.Stale() != 0 {
		return fmt.Errorf("demo: FAIL: %d Secrets are still not under key2: %v", r.Stale(), r.Offenders)
	}
	say("PASS: all %d Secrets in etcd are encrypted with key2", r.Total)
	return nil
}

func under(raw []byte, key string) bool {
	v, err := storedvalue.Classify(raw)
	return err == nil && v.Provider == storedvalue.AESCBC && v.KeyName == key
}

func scan(ctx context.Context, w io.Writer, c *controlplane.Cluster, key string) (etcdscan.Report, error) {
	r, err := etcdscan.Scan(ctx, c.Etcd, "/registry/secrets/", func(v storedvalue.Value) bool {
		return v.Provider == storedvalue.AESCBC && v.KeyName == key
	}, etcdscan.Options{})
	if err != nil {
		return r, fmt.Errorf("demo: scan etcd: %w", err)
	}
	fmt.Fprintf(w, "    etcd scan of /registry/secrets/ at revision %d: %d values\n", r.Revision, r.Total)
	classes := make([]string, 0, len(r.ByClass))
	for k := range r.ByClass {
		classes = append(classes, k)
	}
	sort.Strings(classes)
	for _, k := range classes {
		fmt.Fprintf(w, "      %-20s %6d\n", k, r.ByClass[k])
	}
	return r, nil
}
