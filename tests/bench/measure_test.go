package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat (100 on Linux).
const clockTicks = 100

// procCPU returns a process's user+system CPU time from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime (fields 14 and 15) of a /proc/<pid>/stat line. The command
// name (field 2) is in parentheses and may hold spaces, so fields are counted after its ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state): utime is field 14, f[11].
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// statusKiB reads a "Name:   123 kB" line of /proc/<pid>/status.
func statusKiB(status, name string) (int64, bool) {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			var kib int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kib); err == nil {
				return kib, true
			}
		}
	}
	return 0, false
}

// resetHWM resets a process's peak resident set (VmHWM) to its current one.
func resetHWM(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak RSS of %d: %w", pid, err)
	}
	return nil
}

// hwmWatcher samples the VmHWM (peak resident set) of processes every 10 ms: ru_maxrss of a child
// started by Go counts the parent's pages shared before exec, VmHWM of the exec'd image does not.
type hwmWatcher struct {
	pids    func() []int
	mu      sync.Mutex
	peak    map[int]int64
	done    chan struct{}
	stopped chan struct{}
}

// watchHWM starts sampling the processes pids returns (it is asked at every sample, so a process
// that starts later is found).
func watchHWM(pids func() []int) *hwmWatcher {
	w := &hwmWatcher{pids: pids, peak: map[int]int64{}, done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(w.stopped)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			w.sample()
			select {
			case <-w.done:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *hwmWatcher) sample() {
	for _, pid := range w.pids() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		if kib, ok := statusKiB(string(b), "VmHWM"); ok {
			w.mu.Lock()
			w.peak[pid] = max(w.peak[pid], kib)
			w.mu.Unlock()
		}
	}
}

// stop ends sampling and returns the sum of the processes' peaks, in KiB (processes of a
// pipeline run at the same time).
func (w *hwmWatcher) stop() int64 {
	close(w.done)
	<-w.stopped
	w.mu.Lock()
	defer w.mu.Unlock()
	var sum int64
	for _, kib := range w.peak {
		sum += kib
	}
	return sum
}

// countingProxy forwards TCP connections to an upstream address and counts the bytes each way:
// every client of a row talks to the API server through it, so bytes received are counted the
// same way for kubectl, rekey, the raw client and the functions (TLS passes through untouched).
type countingProxy struct {
	ln       net.Listener
	upstream string
	down, up atomic.Int64 // bytes to the clients, bytes to the server
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func startProxy(upstream string) (*countingProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p := &countingProxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *countingProxy) Addr() string { return p.ln.Addr().String() }

// Received is the number of bytes sent to clients so far.
func (p *countingProxy) Received() int64 { return p.down.Load() }

func (p *countingProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.forward(c)
		}()
	}
}

func (p *countingProxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *countingProxy) forward(client net.Conn) {
	server, err := net.Dial("tcp", p.upstream)
	if err != nil {
		client.Close()
		return
	}
	p.track(client, true)
	p.track(server, true)
	defer func() {
		client.Close()
		server.Close()
		p.track(client, false)
		p.track(server, false)
	}()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn, n *atomic.Int64) {
		_, _ = io.Copy(counter{dst, n}, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(server, client, &p.up)
	go pipe(client, server, &p.down)
	<-done
	<-done
}

// counter is a writer that counts what it writes.
type counter struct {
	w io.Writer
	n *atomic.Int64
}

func (c counter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// Close stops accepting, cuts open connections and waits for the forwarders.
func (p *countingProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// foreground is a client doing a GET of one Secret every interval, as an application reading
// its configuration would, on its own connection: its latencies show what a run costs others.
type foreground struct {
	cs        kubernetes.Interface
	ns, name  string
	interval  time.Duration
	mu        sync.Mutex
	latencies []time.Duration
	errors    int
	cancel    context.CancelFunc
	done      chan struct{}
}

func startForeground(cs kubernetes.Interface, ns, name string, interval time.Duration) *foreground {
	ctx, cancel := context.WithCancel(context.Background())
	f := &foreground{cs: cs, ns: ns, name: name, interval: interval, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			t0 := time.Now()
			_, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
			d := time.Since(t0)
			f.mu.Lock()
			if err != nil {
				if ctx.Err() == nil {
					f.errors++
				}
			} else {
				f.latencies = append(f.latencies, d)
			}
			f.mu.Unlock()
		}
	}()
	return f
}

// foregroundStats summarize the foreground client's GETs over a row.
type foregroundStats struct {
	Samples int     `json:"samples"`
	Errors  int     `json:"errors"`
	P50ms   float64 `json:"p50Ms"`
	P99ms   float64 `json:"p99Ms"`
}

func (f *foreground) stop() foregroundStats {
	f.cancel()
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	return summarize(f.latencies, f.errors)
}

func summarize(d []time.Duration, errs int) foregroundStats {
	s := foregroundStats{Samples: len(d), Errors: errs}
	if len(d) == 0 {
		return s
	}
	s.P50ms = quantile(d, 0.50).Seconds() * 1000
	s.P99ms = quantile(d, 0.99).Seconds() * 1000
	return s
}

// quantile is the nearest-rank q-quantile of d.
func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}
