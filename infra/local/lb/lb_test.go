package lb

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoServer is a plain TCP backend: it greets each connection with its name and a newline, then
// echoes every line back prefixed with its name. It counts the connections it accepted.
type echoServer struct {
	name string
	ln   net.Listener
	mu   sync.Mutex
	n    int
	wg   sync.WaitGroup
}

func newEchoServer(t *testing.T, name string) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{name: name, ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.n++
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				_, _ = io.WriteString(c, name+"\n")
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, name+":"+line); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { s.close() })
	return s
}

func (s *echoServer) addr() string { return s.ln.Addr().String() }

func (s *echoServer) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *echoServer) close() {
	_ = s.ln.Close()
}

func newLB(t *testing.T, servers ...*echoServer) *LB {
	t.Helper()
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = s.addr()
	}
	l, err := New("127.0.0.1:0", addrs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return l
}

// conn is a client connection through the balancer.
type conn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, l *LB) *conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", l.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { _ = c.Close() })
	return &conn{t: t, c: c, r: bufio.NewReader(c)}
}

// greeting returns the name of the backend the connection reached.
func (c *conn) greeting() string {
	c.t.Helper()
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read greeting: %v", err)
	}
	return strings.TrimSuffix(line, "\n")
}

func (c *conn) echo(msg string) string {
	c.t.Helper()
	if _, err := io.WriteString(c.c, msg+"\n"); err != nil {
		c.t.Fatalf("write: %v", err)
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read echo: %v", err)
	}
	return strings.TrimSuffix(line, "\n")
}

// oneShot opens a connection, reads which backend answered and closes it.
func oneShot(t *testing.T, l *LB) string {
	t.Helper()
	c := dial(t, l)
	defer c.c.Close()
	return c.greeting()
}

func TestRoundRobinPerConnection(t *testing.T) {
	a, b, c := newEchoServer(t, "a"), newEchoServer(t, "b"), newEchoServer(t, "c")
	l := newLB(t, a, b, c)
	var got []string
	for range 7 {
		got = append(got, oneShot(t, l))
	}
	if want := "a b c a b c a"; strings.Join(got, " ") != want {
		t.Errorf("backends per connection: %v, want %s", got, want)
	}
	for i, want := range []int64{3, 2, 2} {
		if n := l.Connections(i); n != want {
			t.Errorf("Connections(%d) = %d, want %d", i, n, want)
		}
	}
	if a.accepted() != 3 || b.accepted() != 2 || c.accepted() != 2 {
		t.Errorf("backends accepted %d %d %d, want 3 2 2", a.accepted(), b.accepted(), c.accepted())
	}
	if l.Connections(3) != 0 || l.Connections(-1) != 0 {
		t.Error("unknown backend has connections")
	}
	if got := l.Backends(); len(got) != 3 || got[1] != b.addr() {
		t.Errorf("Backends() = %v", got)
	}
}

func TestConnectionPinned(t *testing.T) {
	a, b := newEchoServer(t, "a"), newEchoServer(t, "b")
	l := newLB(t, a, b)
	c1, c2 := dial(t, l), dial(t, l)
	n1, n2 := c1.greeting(), c2.greeting()
	if n1 == n2 {
		t.Fatalf("two connections both went to %s", n1)
	}
	// Many messages on each connection, interleaved, each answered by its connection's backend.
	for i := range 50 {
		for _, c := range []struct {
			conn *conn
			name string
		}{{c1, n1}, {c2, n2}} {
			msg := strings.Repeat("x", i*100)
			if got, want := c.conn.echo(msg), c.name+":"+msg; got != want {
				t.Fatalf("message %d on the %s connection answered %.20q..., want %.20q...", i, c.name, got, want)
			}
		}
	}
	if a.accepted() != 1 || b.accepted() != 1 {
		t.Errorf("backends accepted %d and %d connections, want 1 each", a.accepted(), b.accepted())
	}
	waitFor(t, func() bool { return l.Active(0) == 1 && l.Active(1) == 1 }, "one active connection per backend")
	_ = c1.c.Close()
	waitFor(t, func() bool { return l.Active(0)+l.Active(1) == 1 }, "the closed connection to be gone")
}

func TestHalfClose(t *testing.T) {
	// The backend reads until EOF, then answers with what it read: the balancer must pass the
	// client's half-close through and still deliver the answer.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		data, _ := io.ReadAll(c)
		_, _ = c.Write(append([]byte("got "), data...))
	}()
	l, err := New("127.0.0.1:0", []string{ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "hello"); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got hello" {
		t.Errorf("answer %q, %v; want \"got hello\"", got, err)
	}
}

func TestDownBackendSkipped(t *testing.T) {
	a, b, c := newEchoServer(t, "a"), newEchoServer(t, "b"), newEchoServer(t, "c")
	l := newLB(t, a, b, c)
	pinned := dial(t, l)
	if got := pinned.greeting(); got != "a" {
		t.Fatalf("first connection went to %s, want a", got)
	}
	if err := l.SetDown(1, true); err != nil {
		t.Fatal(err)
	}
	if !l.IsDown(1) || l.IsDown(0) {
		t.Error("IsDown is wrong")
	}
	if err := l.SetDown(0, true); err != nil {
		t.Fatal(err)
	}
	// Only c is up: every new connection goes there; the pinned connection to a goes on.
	for range 4 {
		if got := oneShot(t, l); got != "c" {
			t.Errorf("with a and b down a connection went to %s", got)
		}
	}
	if got := pinned.echo("still"); got != "a:still" {
		t.Errorf("pinned connection after its backend went down: %q", got)
	}
	if err := l.SetDown(0, false); err != nil {
		t.Fatal(err)
	}
	got := []string{oneShot(t, l), oneShot(t, l), oneShot(t, l)}
	if strings.Join(got, " ") != "a c a" {
		t.Errorf("with b down: %v, want [a c a]", got)
	}
	if b.accepted() != 0 {
		t.Errorf("down backend b accepted %d connections", b.accepted())
	}
	if err := l.SetDown(7, true); err == nil {
		t.Error("SetDown of an unknown backend: no error")
	}

	// Every backend down: the client's connection is closed without an answer.
	for i := range 3 {
		_ = l.SetDown(i, true)
	}
	cl := dial(t, l)
	if _, err := cl.r.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Errorf("read with every backend down: %v, want EOF", err)
	}
}

func TestRefusingBackendFallsThrough(t *testing.T) {
	a, b := newEchoServer(t, "a"), newEchoServer(t, "b")
	l := newLB(t, a, b)
	a.close() // a refuses connections but is not marked down
	for range 3 {
		if got := oneShot(t, l); got != "b" {
			t.Errorf("connection went to %s, want b", got)
		}
	}
	if l.DialFailures(0) == 0 || l.Connections(0) != 0 || l.Connections(1) != 3 {
		t.Errorf("dial failures %d, connections %d and %d; want >0, 0, 3", l.DialFailures(0), l.Connections(0), l.Connections(1))
	}
}

func TestDropConnections(t *testing.T) {
	a, b := newEchoServer(t, "a"), newEchoServer(t, "b")
	l := newLB(t, a, b)
	ca, cb := dial(t, l), dial(t, l)
	if ca.greeting() != "a" || cb.greeting() != "b" {
		t.Fatal("connections not spread a, b")
	}
	n, err := l.DropConnections(0)
	if err != nil || n != 1 {
		t.Fatalf("DropConnections(0) = %d, %v; want 1", n, err)
	}
	if _, err := ca.r.ReadString('\n'); err == nil {
		t.Error("dropped connection still reads")
	}
	if got := cb.echo("ok"); got != "b:ok" {
		t.Errorf("other backend's connection: %q", got)
	}
}

func TestClose(t *testing.T) {
	a := newEchoServer(t, "a")
	l, err := New("127.0.0.1:0", []string{a.addr()})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, l)
	if c.greeting() != "a" {
		t.Fatal("no greeting")
	}
	done := make(chan error, 1)
	go func() { done <- l.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with a connection open")
	}
	if _, err := c.r.ReadString('\n'); err == nil {
		t.Error("connection still open after Close")
	}
	if c, err := net.DialTimeout("tcp", l.Addr(), time.Second); err == nil {
		_ = c.Close()
		t.Error("balancer still accepts after Close")
	}
	if err := l.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if err := l.SetDown(0, true); err != nil { // state changes after Close are harmless
		t.Errorf("SetDown after Close: %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New("127.0.0.1:0", nil); err == nil {
		t.Error("no backends: no error")
	}
	if _, err := New("127.0.0.1:0", []string{"no-port"}); err == nil {
		t.Error("backend without port: no error")
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
