package replicas

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// Names and defaults.
const (
	// IdentityLabel marks the API servers' identity Leases; its value is IdentityValue.
	IdentityLabel = "apiserver.kubernetes.io/identity"
	// IdentityValue is the label value of kube-apiserver's identity Leases.
	IdentityValue = "kube-apiserver"
	// LeaseNamespace holds the identity Leases.
	LeaseNamespace = "kube-system"
	// DefaultFresh is how recently an identity Lease must have been renewed for its replica to
	// count as live (replicas renew every 10 s; a Lease lasts an hour after a replica is gone).
	DefaultFresh = 2 * time.Minute
	// DefaultCallTimeout bounds each Lease list and /metrics read.
	DefaultCallTimeout = 15 * time.Second
	// Unidentified names a connection whose replica could not be told (no /metrics access).
	Unidentified = "unidentified"
)

// Replica is one API server replica.
type Replica struct {
	// ID is the API server's ID hash as its metrics label it (apiserver_id_hash, "sha256:<hex>").
	ID string `json:"id"`
	// Lease is its identity Lease (the API server's ID), "" when it was not learned from one.
	Lease string `json:"lease,omitempty"`
}

// Short returns the replica's ID hash shortened for messages ("sha256:0123456789ab").
func (r Replica) Short() string { return Short(r.ID) }

// Short shortens an ID hash for messages.
func Short(id string) string {
	if len(id) > len("sha256:")+12 {
		return id[:len("sha256:")+12]
	}
	return id
}

// HashID returns the apiserver_id_hash of an API server ID: "sha256:" and the hex SHA-256 of it.
func HashID(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Options adjust Discover; the zero value means the defaults.
type Options struct {
	// Attempts bounds the connections opened (default: 4 per expected replica, at least 8).
	Attempts int
	// Fresh: identity Leases renewed longer ago than this are replicas that are gone (default
	// DefaultFresh).
	Fresh time.Duration
	// CallTimeout bounds each call (default DefaultCallTimeout).
	CallTimeout time.Duration
	// Clock judges Lease freshness (default the real clock).
	Clock clock.PassiveClock
	// Logger receives what was found (default none).
	Logger *zerolog.Logger
	// Dial opens each connection (default a net.Dialer); tests stand a load balancer in with it.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// Set is what Discover found. Close it when done.
type Set struct {
	// Expected are the live replicas the identity Leases name, sorted by ID; nil when they could
	// not be read (see Source).
	Expected []Replica `json:"expected,omitempty"`
	// Source says how Expected was learned, or why it is not known.
	Source string `json:"source"`
	// Reached are the replicas a connection reached, sorted by ID (an unidentified connection is
	// named Unidentified).
	Reached []Replica `json:"reached"`
	// Attempts is the number of connections opened.
	Attempts int `json:"attempts"`
	// Notes say what limits the result (no /metrics access, a replica no connection reached).
	Notes []string `json:"notes,omitempty"`
	// Moved are the routes (replica IDs) whose connection reached another replica, or could not be
	// asked, when Recheck last ran: what went through them cannot be credited to one replica.
	Moved []string `json:"moved,omitempty"`

	conns []*conn
}

// conn is one connection pinned to one replica.
type conn struct {
	replica Replica
	// sole: the replica was not identified over the connection (no /metrics) but is the only
	// live one, so Recheck cannot ask and need not: there is no other replica to reach.
	sole   bool
	client *http.Client
	rest   rest.Interface
	meta   metadata.Interface
}

// close closes the connection's idle connections (through client-go's wrapping round trippers,
// which http.Client.CloseIdleConnections does not see through).
func (c *conn) close() { utilnet.CloseIdleConnectionsFor(c.client.Transport) }

// Routes returns one engine route per connection kept, named by its replica's ID.
func (s *Set) Routes() []reencrypt.Route {
	out := make([]reencrypt.Route, 0, len(s.conns))
	for _, c := range s.conns {
		out = append(out, reencrypt.Route{Name: c.replica.ID, Client: c.meta})
	}
	return out
}

// Known reports whether the number of replicas is known (the identity Leases were read).
func (s *Set) Known() bool { return s.Expected != nil }

// Missing returns the expected replicas no connection reached.
func (s *Set) Missing() []Replica {
	reached := map[string]bool{}
	for _, r := range s.Reached {
		reached[r.ID] = true
	}
	var out []Replica
	for _, r := range s.Expected {
		if !reached[r.ID] {
			out = append(out, r)
		}
	}
	return out
}

// Close closes the connections.
func (s *Set) Close() {
	for _, c := range s.conns {
		c.close()
	}
}

// Recheck asks each connection again which replica serves it and returns the routes (by name)
// whose connection now reaches another replica, or could not be asked: counts made through them
// cannot be attributed to one replica. It also keeps them in Moved.
func (s *Set) Recheck(ctx context.Context, timeout time.Duration) []string {
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	var moved []string
	for _, c := range s.conns {
		if c.replica.ID == Unidentified || c.sole {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		id, err := identify(cctx, c.rest)
		cancel()
		if err != nil || id != c.replica.ID {
			moved = append(moved, c.replica.ID)
		}
	}
	s.Moved = moved
	return moved
}

// Discover learns the cluster's API server replicas and opens one connection to each (see the
// package documentation). cfg reaches the cluster through its load balancer. It fails only when
// no connection could be opened at all; what it could not learn is in Set.Notes.
func Discover(ctx context.Context, cfg *rest.Config, opts Options) (*Set, error) {
	if opts.Fresh <= 0 {
		opts.Fresh = DefaultFresh
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = DefaultCallTimeout
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	s := &Set{}
	s.Expected, s.Source = expected(ctx, cfg, opts)
	attempts := opts.Attempts
	if attempts <= 0 {
		attempts = max(8, 4*len(s.Expected))
	}
	reached := map[string]bool{}
	var lastErr error
	for s.Attempts < attempts && (s.Expected == nil || len(reached) < len(s.Expected)) {
		s.Attempts++
		c, err := open(cfg, opts.Dial)
		if err != nil {
			return nil, err
		}
		cctx, cancel := context.WithTimeout(ctx, opts.CallTimeout)
		id, err := identify(cctx, c.rest)
		cancel()
		if err != nil {
			c.close()
			lastErr = err
			if errors.Is(err, errNoMetrics) || ctx.Err() != nil {
				break
			}
			continue
		}
		if reached[id] {
			c.close()
			continue
		}
		reached[id] = true
		c.replica = Replica{ID: id, Lease: leaseOf(s.Expected, id)}
		s.conns = append(s.conns, c)
	}
	if len(s.conns) == 0 {
		// No connection could be identified: one connection, unidentified. With a single
		// expected replica it is that replica.
		c, err := open(cfg, opts.Dial)
		if err != nil {
			return nil, err
		}
		c.replica = Replica{ID: Unidentified}
		if len(s.Expected) == 1 {
			c.replica, c.sole = s.Expected[0], true
		}
		s.conns = append(s.conns, c)
		if lastErr != nil {
			s.Notes = append(s.Notes, fmt.Sprintf("connections could not be told apart: %v", lastErr))
		}
	}
	for _, c := range s.conns {
		s.Reached = append(s.Reached, c.replica)
	}
	sort.Slice(s.Reached, func(i, j int) bool { return s.Reached[i].ID < s.Reached[j].ID })
	if miss := s.Missing(); len(miss) > 0 {
		names := make([]string, len(miss))
		for i, r := range miss {
			names[i] = r.Short()
		}
		s.Notes = append(s.Notes, fmt.Sprintf("%d of %d replicas reached by no connection in %d attempts: %s", len(miss), len(s.Expected), s.Attempts, strings.Join(names, ", ")))
	}
	log.Info().Int("expected", len(s.Expected)).Str("source", s.Source).Int("reached", len(s.Reached)).Int("attempts", s.Attempts).
		Strs("notes", s.Notes).Msg("API server replicas")
	return s, nil
}

// expected reads the live identity Leases.
func expected(ctx context.Context, cfg *rest.Config, opts Options) ([]Replica, string) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Sprintf("not known: %v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, opts.CallTimeout)
	defer cancel()
	list, err := cs.CoordinationV1().Leases(LeaseNamespace).List(cctx, metav1.ListOptions{LabelSelector: IdentityLabel + "=" + IdentityValue})
	if err != nil {
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			return nil, "not known: the identity may not list Leases in kube-system (grant it to count the API server replicas)"
		}
		return nil, fmt.Sprintf("not known: list the API servers' identity Leases: %v", err)
	}
	now := opts.Clock.Now()
	out := []Replica{}
	for _, l := range list.Items {
		if l.Spec.RenewTime == nil || now.Sub(l.Spec.RenewTime.Time) > opts.Fresh {
			continue
		}
		out = append(out, Replica{ID: HashID(l.Name), Lease: l.Name})
	}
	if len(out) == 0 {
		return nil, fmt.Sprintf("not known: no identity Lease in kube-system renewed in the last %s", opts.Fresh)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, fmt.Sprintf("%d live API server identity Leases in kube-system", len(out))
}

func leaseOf(rs []Replica, id string) string {
	for _, r := range rs {
		if r.ID == id {
			return r.Lease
		}
	}
	return ""
}

// open makes a client with a transport of its own: one HTTP/2 connection, so one replica behind
// a load balancer that pins connections.
func open(cfg *rest.Config, dial func(ctx context.Context, network, address string) (net.Conn, error)) (*conn, error) {
	c := rest.CopyConfig(cfg)
	// A Dial of its own makes client-go build a new transport instead of sharing its cached one.
	c.Dial = dial
	if c.Dial == nil {
		c.Dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	hc, err := rest.HTTPClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("replica connection: %w", err)
	}
	meta, err := metadata.NewForConfigAndClient(c, hc)
	if err != nil {
		return nil, fmt.Errorf("replica connection: %w", err)
	}
	rc := rest.CopyConfig(c)
	rc.GroupVersion, rc.APIPath = nil, ""
	rc.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	raw, err := rest.UnversionedRESTClientForConfigAndClient(rc, hc)
	if err != nil {
		return nil, fmt.Errorf("replica connection: %w", err)
	}
	return &conn{client: hc, rest: raw, meta: meta}, nil
}

// errNoMetrics: /metrics cannot be read, so no connection can be told apart.
var errNoMetrics = errors.New("/metrics is not readable (grant get on nonResourceURLs /metrics to tell the replicas apart)")

// identify reads /metrics over c and returns the first apiserver_id_hash label value in it.
func identify(ctx context.Context, c rest.Interface) (string, error) {
	body, err := c.Get().AbsPath("/metrics").SetHeader("Accept", "text/plain;version=0.0.4").Stream(ctx)
	if err != nil {
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			return "", fmt.Errorf("%w: %v", errNoMetrics, err)
		}
		return "", fmt.Errorf("GET /metrics: %w", err)
	}
	defer body.Close()
	id, err := scanID(body)
	if err != nil {
		return "", err
	}
	return id, nil
}

// scanID returns the first apiserver_id_hash label value in a metrics text.
func scanID(r io.Reader) (string, error) {
	const label = `apiserver_id_hash="`
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.Index(line, label)
		if i < 0 {
			continue
		}
		rest := line[i+len(label):]
		j := strings.IndexByte(rest, '"')
		if j <= 0 {
			continue
		}
		return rest[:j], nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read /metrics: %w", err)
	}
	return "", errors.New("/metrics has no series labelled apiserver_id_hash (no KMS v2 provider or encryption config reload yet): the replica cannot be identified")
}
