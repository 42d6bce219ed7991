package controlplane

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const kubectl = "/usr/bin/kubectl"

// TestCluster drives one real etcd and kube-apiserver through everything the harness promises:
// encryption at rest, automatic reload, restart, kubeconfig, token users and a clean Stop.
func TestCluster(t *testing.T) {
	t.Parallel()
	key1, key2 := NewKey("key1"), NewKey("key2")
	begin := time.Now()
	c := StartT(t, Options{
		Encryption: &Encryption{Providers: []Provider{AESCBC(key1), Identity()}},
		Users:      []User{{Name: "alice", Groups: []string{"dev", "qa"}}},
	})
	t.Logf("MEASURE start-up (certs, etcd, kube-apiserver ready, namespace default): %v", time.Since(begin).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	admin := kubernetes.NewForConfigOrDie(c.RestConfig(AdminUser))
	secrets := admin.CoreV1().Secrets(metav1.NamespaceDefault)

	if info, err := os.Stat(c.EncryptionConfigFile); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("encryption config %s: mode %v, error %v; want 0600", c.EncryptionConfigFile, info.Mode(), err)
	}

	// One replica: no load balancer, Server is the API server, its identity is the host's.
	reps := c.Replicas()
	host, _ := os.Hostname()
	if len(reps) != 1 || c.LB() != nil || reps[0].Server != c.Server || reps[0].Hostname != host ||
		reps[0].EncryptionConfigFile != c.EncryptionConfigFile || reps[0].PID != c.APIServerPID() || reps[0].PID == 0 {
		t.Errorf("one replica: %+v, LB %v, server %s", reps, c.LB(), c.Server)
	} else {
		if got, err := metricsIDHashes(ctx, c, c.Server); err != nil || !slices.Equal(got, []string{reps[0].APIServerIDHash}) {
			t.Errorf("/metrics apiserver_id_hash = %v (%v), want [%s]", got, err, reps[0].APIServerIDHash)
		}
		if got := leaseNames(waitIdentityLeases(ctx, t, admin, []string{reps[0].APIServerID})); !slices.Equal(got, []string{reps[0].APIServerID}) {
			t.Errorf("identity leases %v, want [%s]", got, reps[0].APIServerID)
		}
	}

	// A Secret written now is stored under key1.
	data := map[string][]byte{"password": []byte("s3cr3t")}
	if _, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "before"}, Data: data}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create secret: %v", err)
	}
	assertPrefix(ctx, t, c, "before", "k8s:enc:aescbc:v1:key1:")

	// Rotate: key2 first, key1 still readable. The API server picks the file up by itself.
	if err := c.SetEncryption(Encryption{Providers: []Provider{AESCBC(key2, key1), Identity()}}); err != nil {
		t.Fatal(err)
	}
	reloadBegin := time.Now()
	if err := c.WaitEncryptionReload(ctx, hasPrefix("k8s:enc:aescbc:v1:key2:")); err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURE automatic reload seen by a canary after %v", time.Since(reloadBegin).Round(time.Millisecond))
	if info, err := os.Stat(c.EncryptionConfigFile); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("rewritten encryption config: mode %v, error %v; want 0600", info.Mode(), err)
	}
	canaries, err := secrets.List(ctx, metav1.ListOptions{LabelSelector: CanaryLabel})
	if err != nil || len(canaries.Items) != 0 {
		t.Errorf("canaries left behind: %d (error %v)", len(canaries.Items), err)
	}

	// The old Secret still reads through the API and is still key1 in etcd; a new one is key2.
	got, err := secrets.Get(ctx, "before", metav1.GetOptions{})
	if err != nil || !bytes.Equal(got.Data["password"], data["password"]) {
		t.Fatalf("read old secret after reload: %v (data %q)", err, got.Data["password"])
	}
	assertPrefix(ctx, t, c, "before", "k8s:enc:aescbc:v1:key1:")
	if _, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "after"}, Data: data}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create secret: %v", err)
	}
	assertPrefix(ctx, t, c, "after", "k8s:enc:aescbc:v1:key2:")

	// A kubeconfig works with kubectl and clientcmd.
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := c.WriteKubeconfig(AdminUser, kubeconfig); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "get", "secrets", "-A").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "before") || !strings.Contains(string(out), "after") {
		t.Errorf("kubectl get secrets -A: %v\n%s", err, out)
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	if restCfg.Insecure || len(restCfg.CAData) == 0 {
		t.Errorf("kubeconfig: insecure %v, %d bytes of CA", restCfg.Insecure, len(restCfg.CAData))
	}
	if _, err := kubernetes.NewForConfigOrDie(restCfg).CoreV1().Secrets("default").Get(ctx, "after", metav1.GetOptions{}); err != nil {
		t.Errorf("clientcmd client: %v", err)
	}

	// A token user without RBAC is authenticated (with its groups) and forbidden.
	alice := kubernetes.NewForConfigOrDie(c.RestConfig("alice"))
	if _, err := alice.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("alice lists secrets: got %v, want Forbidden", err)
	}
	review, err := alice.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("alice self-subject review: %v", err)
	}
	if u := review.Status.UserInfo; u.Username != "alice" || !slices.Contains(u.Groups, "dev") || !slices.Contains(u.Groups, "qa") {
		t.Errorf("alice is %q in %q", u.Username, u.Groups)
	}

	// RestartAPIServer applies a new config at once: identity first.
	if err := c.SetEncryption(Encryption{Providers: []Provider{Identity(), AESCBC(key2, key1)}}); err != nil {
		t.Fatal(err)
	}
	restartBegin := time.Now()
	if err := c.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURE kube-apiserver restart: %v", time.Since(restartBegin).Round(time.Millisecond))
	if _, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "plain"}, Data: data}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create secret after restart: %v", err)
	}
	assertPrefix(ctx, t, c, "plain", "k8s\x00")
	for _, name := range []string{"before", "after"} {
		if got, err := secrets.Get(ctx, name, metav1.GetOptions{}); err != nil || !bytes.Equal(got.Data["password"], data["password"]) {
			t.Errorf("read %s after restart: %v", name, err)
		}
	}

	// Stop leaves no process and no directory, and can be called again.
	pids := []int{c.etcd.pid(), c.replicas[0].proc.pid()}
	if _, err := os.Stat(filepath.Join(c.Dir, "kube-apiserver.log")); err != nil {
		t.Errorf("kube-apiserver log: %v", err)
	}
	stopBegin := time.Now()
	if err := c.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	t.Logf("MEASURE stop: %v", time.Since(stopBegin).Round(time.Millisecond))
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still exists after Stop (kill 0: %v)", pid, err)
		}
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process group %d still exists after Stop (kill 0: %v)", pid, err)
		}
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("working directory %s after Stop: %v", c.Dir, err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if err := c.RestartAPIServer(ctx); err == nil {
		t.Error("RestartAPIServer after Stop: no error")
	}
}

func hasPrefix(prefix string) func([]byte) bool {
	return func(raw []byte) bool { return bytes.HasPrefix(raw, []byte(prefix)) }
}

func assertPrefix(ctx context.Context, t *testing.T, c *Cluster, name, prefix string) {
	t.Helper()
	raw, err := c.EtcdValue(ctx, SecretKey("default", name))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(raw, []byte(prefix)) {
		n := min(len(raw), len(prefix)+8)
		t.Errorf("etcd value of secret default/%s starts %q, want prefix %q", name, raw[:n], prefix)
	}
}
