// Package lb is a small TCP load balancer for rekey's local control plane, shaped like the cloud
// load balancer (an Alibaba Cloud SLB, for example) in front of a managed Kubernetes control plane
// with several kube-apiserver replicas.
//
// Each new client connection goes to the next backend in round-robin order that is not marked
// down, and the whole connection stays pinned to that backend: bytes are copied both ways
// untouched (TLS passes through; the backends terminate it), half-closes included. A backend that
// refuses the connection is skipped for that connection and the next one is tried, as a cloud load
// balancer's health check would eventually do. SetDown takes a backend out of rotation without
// cutting the connections it already serves; DropConnections cuts them. Close stops the listener
// and every connection.
package lb

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DialTimeout bounds how long the balancer waits for one backend to accept a connection before
// it tries the next.
const DialTimeout = 2 * time.Second

// backend is one target address with its state and counters.
type backend struct {
	addr     string
	down     atomic.Bool
	accepted atomic.Int64 // connections piped to this backend since New
	failed   atomic.Int64 // dials to this backend that failed
	active   map[*pipe]struct{}
}

// pipe is one client connection pinned to one backend connection.
type pipe struct {
	client, server net.Conn
	backend        int
}

// LB is a running load balancer. Its methods are safe for concurrent use.
type LB struct {
	ln       net.Listener
	backends []*backend

	mu     sync.Mutex // guards next, closed and every backend's active set
	next   int
	closed bool

	wg sync.WaitGroup // the accept loop and every pipe's goroutines
}

// New listens on addr ("127.0.0.1:0" picks a free port) and balances connections over backends
// ("host:port" each, in order; backend i in the other methods is backends[i]). Every backend
// starts up. Close stops it.
func New(addr string, backends []string) (*LB, error) {
	if len(backends) == 0 {
		return nil, errors.New("start load balancer: no backends")
	}
	l := &LB{}
	for i, a := range backends {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("start load balancer: backend %d: %w", i, err)
		}
		l.backends = append(l.backends, &backend{addr: a, active: map[*pipe]struct{}{}})
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("start load balancer: %w", err)
	}
	l.ln = ln
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// Addr returns the address the balancer listens on, "127.0.0.1:PORT".
func (l *LB) Addr() string { return l.ln.Addr().String() }

// Backends returns the backend addresses, in the order given to New.
func (l *LB) Backends() []string {
	out := make([]string, len(l.backends))
	for i, b := range l.backends {
		out[i] = b.addr
	}
	return out
}

// SetDown marks backend i down (true: no new connections go to it; the ones it serves go on) or
// up again (false).
func (l *LB) SetDown(i int, down bool) error {
	b, err := l.backend(i)
	if err != nil {
		return fmt.Errorf("set backend %d down=%v: %w", i, down, err)
	}
	b.down.Store(down)
	return nil
}

// IsDown reports whether backend i is marked down (false for an unknown backend).
func (l *LB) IsDown(i int) bool {
	b, err := l.backend(i)
	return err == nil && b.down.Load()
}

// Connections returns how many client connections have been piped to backend i since New
// (0 for an unknown backend).
func (l *LB) Connections(i int) int64 {
	b, err := l.backend(i)
	if err != nil {
		return 0
	}
	return b.accepted.Load()
}

// DialFailures returns how many times backend i refused (or did not accept in DialTimeout) a
// connection the balancer tried to give it (0 for an unknown backend).
func (l *LB) DialFailures(i int) int64 {
	b, err := l.backend(i)
	if err != nil {
		return 0
	}
	return b.failed.Load()
}

// Active returns how many connections backend i serves now (0 for an unknown backend).
func (l *LB) Active(i int) int {
	if _, err := l.backend(i); err != nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.backends[i].active)
}

// DropConnections closes every connection backend i serves now (both sides) and returns how many
// there were. Clients see their connection reset and reconnect through the balancer.
func (l *LB) DropConnections(i int) (int, error) {
	b, err := l.backend(i)
	if err != nil {
		return 0, fmt.Errorf("drop connections of backend %d: %w", i, err)
	}
	l.mu.Lock()
	pipes := make([]*pipe, 0, len(b.active))
	for p := range b.active {
		pipes = append(pipes, p)
	}
	l.mu.Unlock()
	for _, p := range pipes {
		p.close()
	}
	return len(pipes), nil
}

// Close stops accepting connections, closes every piped connection and waits until all of the
// balancer's goroutines have returned. It is idempotent.
func (l *LB) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	var pipes []*pipe
	for _, b := range l.backends {
		for p := range b.active {
			pipes = append(pipes, p)
		}
	}
	l.mu.Unlock()
	err := l.ln.Close()
	for _, p := range pipes {
		p.close()
	}
	l.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close load balancer: %w", err)
	}
	return nil
}

func (l *LB) backend(i int) (*backend, error) {
	if i < 0 || i >= len(l.backends) {
		return nil, fmt.Errorf("no backend %d (have %d)", i, len(l.backends))
	}
	return l.backends[i], nil
}

func (l *LB) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient accept error (too many open files, say): back off briefly.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		l.wg.Add(1)
		go l.serve(c)
	}
}

// pick returns the round-robin order of the backends that are up for one new connection: the
// next one first, then the others, so a refused dial can fall through to the next.
func (l *LB) pick() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.backends)
	order := make([]int, 0, n)
	for k := range n {
		i := (l.next + k) % n
		if !l.backends[i].down.Load() {
			order = append(order, i)
		}
	}
	if len(order) > 0 {
		l.next = (order[0] + 1) % n
	}
	return order
}

// serve pins client to a backend and pipes bytes until both directions are done.
func (l *LB) serve(client net.Conn) {
	defer l.wg.Done()
	var server net.Conn
	idx := -1
	for _, i := range l.pick() {
		b := l.backends[i]
		c, err := net.DialTimeout("tcp", b.addr, DialTimeout)
		if err != nil {
			b.failed.Add(1)
			continue
		}
		server, idx = c, i
		break
	}
	if server == nil { // every backend down or refusing: the client sees its connection closed
		_ = client.Close()
		return
	}
	p := &pipe{client: client, server: server, backend: idx}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		p.close()
		return
	}
	b := l.backends[idx]
	b.accepted.Add(1)
	b.active[p] = struct{}{}
	l.mu.Unlock()

	done := make(chan struct{}, 2)
	go func() { copyHalf(server, client); done <- struct{}{} }()
	go func() { copyHalf(client, server); done <- struct{}{} }()
	<-done
	<-done
	p.close()
	l.mu.Lock()
	delete(b.active, p)
	l.mu.Unlock()
}

// copyHalf copies src to dst until src ends, then half-closes dst for writing so the peer sees
// EOF. An error other than EOF closes both connections, which ends the other direction too.
func copyHalf(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if err != nil {
		_ = dst.Close()
		_ = src.Close()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	_ = dst.Close()
}

// close closes both ends of the pipe; it is safe to call more than once.
func (p *pipe) close() {
	_ = p.client.Close()
	_ = p.server.Close()
}
