package controlplane

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// CanaryLabel is set to "true" on the Secrets WaitEncryptionReload creates (and deletes) in
// namespace "default"; tests that count Secrets can exclude them with a label selector.
const CanaryLabel = "controlplane.rekey.dev/canary"

// reloadPollInterval is how often WaitEncryptionReload writes a canary.
const reloadPollInterval = time.Second

// ErrKeyNotFound is returned (wrapped) by EtcdValue when etcd has no such key.
var ErrKeyNotFound = errors.New("key not found in etcd")

// SecretKey returns the etcd key of Secret namespace/name under kube-apiserver's default
// prefix: /registry/secrets/NAMESPACE/NAME.
func SecretKey(namespace, name string) string {
	return "/registry/secrets/" + namespace + "/" + name
}

// EtcdValue returns the raw value stored at key, as the API server wrote it.
func (c *Cluster) EtcdValue(ctx context.Context, key string) ([]byte, error) {
	resp, err := c.Etcd.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("etcd get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("etcd get %s: %w", key, ErrKeyNotFound)
	}
	return resp.Kvs[0].Value, nil
}

// SetEncryption atomically replaces the encryption config file (temporary file and rename in
// the same directory). kube-apiserver v1.37 checks the file for changes about once a minute:
// use WaitEncryptionReload to know when it took effect, or RestartAPIServer to apply it now.
// It fails when the cluster was started without Options.Encryption. With several replicas it
// replaces every replica's file (and fails, writing none, when a replica has none; see
// SetReplicaEncryption for one replica).
func (c *Cluster) SetEncryption(e Encryption) error {
	var files []string
	for _, r := range c.replicas {
		if r.hasEncryption() {
			files = append(files, r.encryptionFile)
		}
	}
	if len(files) == 0 {
		return errors.New("set encryption: the cluster was started without Options.Encryption, so kube-apiserver reads no encryption config")
	}
	if len(files) < len(c.replicas) {
		return fmt.Errorf("set encryption: only %d of %d replicas were started with an encryption config (Options.ReplicaEncryption); use SetReplicaEncryption", len(files), len(c.replicas))
	}
	data, err := encryptionConfigYAML(e)
	if err != nil {
		return fmt.Errorf("set encryption: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range files {
		if err := writeFileAtomic(f, data); err != nil {
			return fmt.Errorf("set encryption: %w", err)
		}
	}
	return nil
}

// WaitEncryptionReload polls until the API server writes with the configuration want accepts:
// about once a second it creates a canary Secret (label CanaryLabel) in namespace "default" as
// the admin, reads its raw value from etcd, deletes it and returns nil once want(raw) is true.
// It returns an error when ctx is done first; allow more than a minute after SetEncryption.
// With several replicas it does so through each running replica's own URL in turn and returns
// once every one of them writes with the wanted configuration (a replica stopped meanwhile is
// still waited for; see WaitReplicaEncryptionReload for one replica).
func (c *Cluster) WaitEncryptionReload(ctx context.Context, want func(raw []byte) bool) error {
	if len(c.replicas) <= 1 {
		return c.waitReload(ctx, c.RestConfig(AdminUser), want)
	}
	c.mu.Lock()
	var running []int
	for _, r := range c.replicas {
		if r.running() {
			running = append(running, r.index)
		}
	}
	c.mu.Unlock()
	if len(running) == 0 {
		return errors.New("wait for encryption reload: no replica is running")
	}
	for _, i := range running {
		if err := c.WaitReplicaEncryptionReload(ctx, i, want); err != nil {
			return err
		}
	}
	return nil
}

// waitReload is WaitEncryptionReload through the API server cfg points at.
func (c *Cluster) waitReload(ctx context.Context, cfg *rest.Config, want func(raw []byte) bool) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("wait for encryption reload: %w", err)
	}
	start := time.Now()
	var last error
	for attempt := 1; ; attempt++ {
		ok, err := c.probeCanary(ctx, cs, want)
		if ok {
			if err != nil { // reloaded, but the canary could not be deleted
				return fmt.Errorf("wait for encryption reload: %w", err)
			}
			return nil
		}
		if err != nil {
			last = err
		} else {
			last = errors.New("canary not written with the wanted config")
		}
		t := time.NewTimer(reloadPollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("wait for encryption reload: gave up after %d canaries in %v: %w (last: %v)",
				attempt, time.Since(start).Round(time.Millisecond), ctx.Err(), last)
		case <-t.C:
		}
	}
}

// probeCanary writes one canary Secret, reports want(raw etcd value) and deletes the canary.
func (c *Cluster) probeCanary(ctx context.Context, cs kubernetes.Interface, want func([]byte) bool) (ok bool, err error) {
	payload := make([]byte, 16)
	_, _ = rand.Read(payload)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "rekey-canary-",
			Namespace:    metav1.NamespaceDefault,
			Labels:       map[string]string{CanaryLabel: "true"},
		},
		Data: map[string][]byte{"canary": payload},
	}
	created, err := cs.CoreV1().Secrets(metav1.NamespaceDefault).Create(ctx, secret, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("create canary secret: %w", err)
	}
	defer func() {
		// Delete even when ctx is done, so no canary outlives the wait.
		delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if delErr := cs.CoreV1().Secrets(metav1.NamespaceDefault).Delete(delCtx, created.Name, metav1.DeleteOptions{}); delErr != nil {
			err = errors.Join(err, fmt.Errorf("delete canary secret default/%s: %w", created.Name, delErr))
		}
	}()
	raw, err := c.EtcdValue(ctx, SecretKey(metav1.NamespaceDefault, created.Name))
	if err != nil {
		return false, fmt.Errorf("read canary secret default/%s: %w", created.Name, err)
	}
	return want(raw), nil
}
