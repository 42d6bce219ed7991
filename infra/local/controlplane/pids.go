package controlplane

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
// stopped). After a restart it is the new process's.
func (c *Cluster) APIServerPID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return livePID(c.stopped, c.apiserver)
}

func livePID(stopped bool, p *process) int {
	if stopped || p == nil || p.exited() {
		return 0
	}
	return p.pid()
}
