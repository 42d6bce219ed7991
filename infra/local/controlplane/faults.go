package controlplane

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// Fault injection for rekey's fault suite (tests/faults): the processes die the way they die in
// production (SIGKILL, no clean shutdown) and come back with the same flags, ports and data.

// KillAPIServer kills kube-apiserver with SIGKILL (no graceful shutdown: requests in flight get a
// reset connection) and waits until it has been reaped. StartAPIServer brings it back. With
// several replicas it kills every running replica (and fails when none is running); the load
// balancer is not told (see KillReplica).
func (c *Cluster) KillAPIServer() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || len(c.replicas) == 0 {
		return errors.New("kill kube-apiserver: cluster is stopped")
	}
	killed := 0
	for _, r := range c.replicas {
		if len(c.replicas) > 1 && !r.running() {
			continue
		}
		if err := c.kill(r.proc); err != nil {
			return fmt.Errorf("kill %s: %w", r.name, err)
		}
		killed++
	}
	if killed == 0 {
		return errors.New("kill kube-apiserver: no replica is running")
	}
	return nil
}

// StartAPIServer starts kube-apiserver again, with the same flags, port and encryption config,
// after KillAPIServer, and returns once it is ready (/readyz answers 200 and namespace "default"
// exists). With several replicas it starts every replica that is not running (all at once, each
// out of the load balancer's rotation until it is ready) and fails when every replica runs.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startStopped(ctx, readyPaths...)
}

// StartAPIServerLive starts kube-apiserver again like StartAPIServer but returns as soon as it
// serves unencrypted resources (GET namespace "default" answers 200), without waiting for
// /readyz or /livez: an API server whose KMS is unreachable serves requests (and answers 500 to
// those that need KMS) but is neither ready nor live (its storage-readiness hook waits for the
// Secrets cache, which cannot decrypt). With several replicas it acts on every replica that is
// not running, like StartAPIServer; each rejoins the load balancer's rotation once it serves.
func (c *Cluster) StartAPIServerLive(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startStopped(ctx, "/api/v1/namespaces/default")
}

// startStopped starts the API server (with several replicas, every replica that is not running)
// and waits until each answers 200 to paths. c.mu is held.
func (c *Cluster) startStopped(ctx context.Context, paths ...string) error {
	if c.stopped || len(c.replicas) == 0 {
		return errors.New("start kube-apiserver: cluster is stopped")
	}
	var started []*replica
	for _, r := range c.replicas {
		if len(c.replicas) > 1 && r.running() {
			continue
		}
		if err := c.canStart(r.proc); err != nil {
			return fmt.Errorf("start %s: %w", r.name, err)
		}
		c.setDown(r, true)
		if err := c.startReplicaProcess(r); err != nil {
			return fmt.Errorf("start %s: %w", r.name, err)
		}
		started = append(started, r)
	}
	if len(started) == 0 {
		return errors.New("start kube-apiserver: every replica is still running (kill them first)")
	}
	for _, r := range started {
		if err := c.waitReplica(ctx, r, paths...); err != nil {
			return fmt.Errorf("start %s: %w", r.name, err)
		}
		c.setDown(r, false)
	}
	return nil
}

// RestartAPIServerLive kills kube-apiserver (SIGKILL) and starts it again, waiting only until it
// serves (see StartAPIServerLive). With several replicas it kills and starts every replica.
func (c *Cluster) RestartAPIServerLive(ctx context.Context) error {
	if err := c.KillAPIServer(); err != nil {
		return err
	}
	return c.StartAPIServerLive(ctx)
}

// KillEtcd kills etcd with SIGKILL and waits until it has been reaped. Its data directory is
// kept: StartEtcd brings the same member back on the same port.
func (c *Cluster) KillEtcd() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.kill(c.etcd); err != nil {
		return fmt.Errorf("kill etcd: %w", err)
	}
	return nil
}

// StartEtcd starts etcd again after KillEtcd, with the same flags, port and data directory, and
// returns once it answers a read. kube-apiserver and Cluster.Etcd reconnect on their own.
func (c *Cluster) StartEtcd(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.canStart(c.etcd); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	// etcd runs with the test's environment (no extra variables): its path and flags are enough.
	old := c.etcd.cmd
	p, err := startProcess("etcd", old.Path, old.Args[1:], nil, c.Dir, c.etcdLog)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	c.etcd = p
	if err := c.waitEtcd(ctx); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	return nil
}

// RestartEtcd kills etcd (SIGKILL), starts it again with its data after down (0: at once) and
// waits until it answers.
func (c *Cluster) RestartEtcd(ctx context.Context, down time.Duration) error {
	if err := c.KillEtcd(); err != nil {
		return err
	}
	if down > 0 {
		t := time.NewTimer(down)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("restart etcd: %w", ctx.Err())
		case <-t.C:
		}
	}
	return c.StartEtcd(ctx)
}

// kill sends SIGKILL to p's process group and waits until p has been reaped. c.mu is held.
func (c *Cluster) kill(p *process) error {
	if c.stopped || p == nil {
		return errors.New("cluster is stopped")
	}
	if p.exited() {
		return fmt.Errorf("%s is not running", p.name)
	}
	p.stopping.Store(true) // a killed process is not a crash for Stop
	if err := signalGroup(p.pid(), syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	return nil
}

// canStart reports whether p may be replaced by a new process. c.mu is held.
func (c *Cluster) canStart(p *process) error {
	if c.stopped || p == nil {
		return errors.New("cluster is stopped")
	}
	if !p.exited() {
		return fmt.Errorf("%s is still running (kill it first)", p.name)
	}
	return nil
}
