package controlplane

import "fmt"

// PIDs of the control plane's processes, for benchmarks that read their CPU time and memory from
// /proc.

// EtcdPID returns the process ID of the running etcd (0 when the cluster is stopped). After a
// restart (StartEtcd) it is the new process's.
func (c *Cluster) EtcdPID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return livePID(c.stopped, c.etcd)
}

// APIServerPID returns the process ID of the running kube-apiserver (0 when the cluster is
// stopped). After a restart it is the new process's. With several replicas there is no one
// process: it panics (a bug in the caller); read Replicas()[i].PID instead.
func (c *Cluster) APIServerPID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.replicas) > 1 {
		panic(fmt.Sprintf("controlplane: APIServerPID: %v (%d); use Replicas()[i].PID", errSeveralReplicas, len(c.replicas)))
	}
	if len(c.replicas) == 0 {
		return 0
	}
	return livePID(c.stopped, c.replicas[0].proc)
}

func livePID(stopped bool, p *process) int {
	if stopped || p == nil || p.exited() {
		return 0
	}
	return p.pid()
}
