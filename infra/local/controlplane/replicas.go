package controlplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/infra/local/lb"
	"github.com/rekey-dev/rekey/shared/replicas"
)

// Several kube-apiservers on one etcd behind a TCP load balancer, the shape of a managed control
// plane (ACK and the like): Options.Replicas.

// APIServerHostnameEnv is the environment variable through which the harness's kube-apiserver
// build (infra/local/tools/kube-apiserver) takes the host name its identity is derived from.
// With several replicas each gets ReplicaHostname(i).
const APIServerHostnameEnv = "REKEY_APISERVER_HOSTNAME"

// ReplicaHostname returns the host name replica i of a cluster with several replicas derives its
// identity from: "rekey-apiserver-I".
func ReplicaHostname(i int) string { return fmt.Sprintf("rekey-apiserver-%d", i) }

// APIServerID returns the identity kube-apiserver v1.37 derives from hostname (k8s.io/apiserver
// pkg/server NewConfig): "apiserver-" and the lower-case, unpadded base32 of the first 16 bytes
// of the SHA-256 of hostname and "kube-apiserver", each with a 16-bit length prefix. It names the
// API server's identity Lease in kube-system.
func APIServerID(hostname string) string {
	// cryptobyte's AddUint16LengthPrefixed, spelled out: a big-endian uint16 length, the bytes.
	var data []byte
	for _, field := range []string{hostname, "kube-apiserver"} {
		if len(field) > 0xffff { // kube-apiserver exits (klog.Fatal) on such a host name
			panic(fmt.Sprintf("controlplane: APIServerID: host name of %d bytes", len(field)))
		}
		data = binary.BigEndian.AppendUint16(data, uint16(len(field)))
		data = append(data, field...)
	}
	sum := sha256.Sum256(data)
	return "apiserver-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:16]))
}

// APIServerIDHash returns the apiserver_id_hash label kube-apiserver's metrics carry for the API
// server with identity id (for example apiserver_encryption_config_controller_last_config_info
// and apiserver_envelope_encryption_*): "sha256:" and the hex SHA-256 of id.
// It is rekey's own replicas.HashID: the harness's test of it against upstream's values tests both.
func APIServerIDHash(id string) string {
	if id == "" {
		return ""
	}
	return replicas.HashID(id)
}

// Replica describes one kube-apiserver of a Cluster.
type Replica struct {
	// Index is the replica's number, 0 to Replicas-1; also its backend index in LB().
	Index int
	// Server is the replica's own URL, https://127.0.0.1:PORT, bypassing the load balancer.
	Server string
	// Hostname is the host name the replica derives its identity from: ReplicaHostname(Index)
	// with several replicas, the machine's (or $REKEY_APISERVER_HOSTNAME) with one.
	Hostname string
	// APIServerID is the replica's identity, APIServerID(Hostname): the name of its Lease in
	// kube-system (label apiserver.kubernetes.io/identity=kube-apiserver).
	APIServerID string
	// APIServerIDHash is the apiserver_id_hash label of the replica's metrics.
	APIServerIDHash string
	// EncryptionConfigFile is the path of the replica's encryption config, "" without one.
	EncryptionConfigFile string
	// PID is the process ID of the replica's kube-apiserver, 0 when it is not running.
	PID int
	// Down reports whether the load balancer keeps new connections away from the replica
	// (StopReplica; a replica starting up). Always false with one replica.
	Down bool
}

// replica is one kube-apiserver: its fixed facts and (guarded by Cluster.mu) its process.
type replica struct {
	index          int
	name           string // process and log name: "kube-apiserver" or "kube-apiserver-I"
	port           int
	server         string
	certDir        string
	encryptionFile string // always set; used only when encrypted
	encrypted      bool   // started with --encryption-provider-config
	hostname, id   string
	args, env      []string
	log            *procLog

	proc *process // nil before the first start
}

// newReplicas returns n replicas' names and paths in dir; ports, flags and logs come later.
func newReplicas(dir string, n int) ([]*replica, error) {
	out := make([]*replica, n)
	for i := range n {
		r := &replica{
			index:          i,
			name:           "kube-apiserver",
			certDir:        filepath.Join(dir, "apiserver-certs"),
			encryptionFile: filepath.Join(dir, "encryption-config.yaml"),
		}
		if n == 1 {
			// One replica is exactly the single API server of old: the host's identity.
			r.hostname = os.Getenv(APIServerHostnameEnv)
			if r.hostname == "" {
				h, err := os.Hostname()
				if err != nil {
					return nil, fmt.Errorf("host name for the API server's identity: %w", err)
				}
				r.hostname = h
			}
		} else {
			suffix := fmt.Sprintf("-%d", i)
			r.name += suffix
			r.certDir += suffix
			r.encryptionFile = filepath.Join(dir, fmt.Sprintf("encryption-config-%d.yaml", i))
			r.hostname = ReplicaHostname(i)
		}
		r.id = APIServerID(r.hostname)
		out[i] = r
	}
	return out, nil
}

// hasEncryption reports whether the replica was started with an encryption config file.
func (r *replica) hasEncryption() bool { return r.encrypted }

// running reports whether the replica's process is running. c.mu is held.
func (r *replica) running() bool { return r.proc != nil && !r.proc.exited() }

// Replicas returns a description of every kube-apiserver, in index order (one element without
// Options.Replicas).
func (c *Cluster) Replicas() []Replica {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Replica, len(c.replicas))
	for i, r := range c.replicas {
		out[i] = Replica{
			Index:           r.index,
			Server:          r.server,
			Hostname:        r.hostname,
			APIServerID:     r.id,
			APIServerIDHash: APIServerIDHash(r.id),
			PID:             livePID(c.stopped, r.proc),
			Down:            c.lb != nil && c.lb.IsDown(r.index),
		}
		if r.hasEncryption() {
			out[i].EncryptionConfigFile = r.encryptionFile
		}
	}
	return out
}

// LB returns the load balancer in front of the replicas (Server is its address), for counting
// connections per replica or taking one out of rotation; nil with one replica. Stop closes it.
func (c *Cluster) LB() *lb.LB { return c.lb }

// replica returns replica i or an error naming the valid range.
func (c *Cluster) replica(i int) (*replica, error) {
	if i < 0 || i >= len(c.replicas) {
		return nil, fmt.Errorf("no replica %d: the cluster has %d", i, len(c.replicas))
	}
	return c.replicas[i], nil
}

// ReplicaRestConfig is RestConfig for replica i's own URL, bypassing the load balancer. It panics
// for an unknown user or replica: that is a bug in the test.
func (c *Cluster) ReplicaRestConfig(i int, user string) *rest.Config {
	r, err := c.replica(i)
	if err != nil {
		panic("controlplane: ReplicaRestConfig: " + err.Error())
	}
	cfg := c.RestConfig(user)
	cfg.Host = r.server
	return cfg
}

// StopReplica takes replica i out of the load balancer's rotation (no new connections go to it)
// and stops its kube-apiserver (SIGTERM, SIGKILL after 10 s), as when a managed control plane
// drains one API server. StartReplica brings it back. With one replica it stops the API server
// (there is no load balancer).
func (c *Cluster) StopReplica(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, err := c.replica(i)
	if err != nil {
		return fmt.Errorf("stop replica: %w", err)
	}
	if c.stopped || r.proc == nil {
		return fmt.Errorf("stop %s: cluster is stopped", r.name)
	}
	if !r.running() {
		return fmt.Errorf("stop %s: it is not running", r.name)
	}
	c.setDown(r, true)
	if err := r.proc.stop(); err != nil {
		return fmt.Errorf("stop %s: %w", r.name, err)
	}
	return nil
}

// KillReplica kills replica i's kube-apiserver with SIGKILL, like KillAPIServer for one replica.
// The load balancer is not told: like a cloud load balancer before its health check notices,
// it goes on choosing the replica and falls through to the next one when the connection is
// refused. StartReplica brings it back.
func (c *Cluster) KillReplica(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, err := c.replica(i)
	if err != nil {
		return fmt.Errorf("kill replica: %w", err)
	}
	if err := c.kill(r.proc); err != nil {
		return fmt.Errorf("kill %s: %w", r.name, err)
	}
	return nil
}

// StartReplica starts replica i's kube-apiserver again (same flags, port, identity and current
// encryption config file) after StopReplica or KillReplica, waits until it is ready (/readyz and
// namespace "default") and puts it back into the load balancer's rotation.
func (c *Cluster) StartReplica(ctx context.Context, i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, err := c.replica(i)
	if err != nil {
		return fmt.Errorf("start replica: %w", err)
	}
	if err := c.canStart(r.proc); err != nil {
		return fmt.Errorf("start %s: %w", r.name, err)
	}
	if err := c.startReplica(ctx, r, readyPaths...); err != nil {
		return fmt.Errorf("start %s: %w", r.name, err)
	}
	return nil
}

// SetReplicaEncryption atomically replaces replica i's encryption config file, like
// SetEncryption for that replica alone: the replicas then disagree until the others get the same
// config. It fails when the replica was started without an encryption config.
func (c *Cluster) SetReplicaEncryption(i int, e Encryption) error {
	r, err := c.replica(i)
	if err != nil {
		return fmt.Errorf("set replica encryption: %w", err)
	}
	if !r.hasEncryption() {
		return fmt.Errorf("set %s encryption: the replica was started without an encryption config, so it reads none", r.name)
	}
	data, err := encryptionConfigYAML(e)
	if err != nil {
		return fmt.Errorf("set %s encryption: %w", r.name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := writeFileAtomic(r.encryptionFile, data); err != nil {
		return fmt.Errorf("set %s encryption: %w", r.name, err)
	}
	return nil
}

// WaitReplicaEncryptionReload is WaitEncryptionReload against replica i alone: the canaries are
// written through the replica's own URL.
func (c *Cluster) WaitReplicaEncryptionReload(ctx context.Context, i int, want func(raw []byte) bool) error {
	r, err := c.replica(i)
	if err != nil {
		return fmt.Errorf("wait for encryption reload: %w", err)
	}
	if err := c.waitReload(ctx, c.ReplicaRestConfig(i, AdminUser), want); err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	return nil
}

// replicaLogTails returns the last n lines of every replica's output, for a failed test.
func (c *Cluster) replicaLogTails(n int) string {
	var b bytes.Buffer
	for _, r := range c.replicas {
		if r.log == nil {
			continue
		}
		fmt.Fprintf(&b, "%s output (last lines):\n%s\n", r.name, r.log.tailText(n))
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// errSeveralReplicas is the error of a single-API-server method on a cluster with several.
var errSeveralReplicas = errors.New("the cluster runs several kube-apiserver replicas")
