package state

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/retry"
)

// Namespace is where rekey keeps its state, checkpoints and Leases.
const Namespace = "rekey-system"

// RBACFile is the shipped RBAC that grants what a Store needs; errors about missing permissions name it.
const RBACFile = "infra/rbac/rekey-function.yaml"

// Defaults of the options.
const (
	// DefaultHandledLimit bounds the number of handled events kept for deduplication.
	DefaultHandledLimit = 1000
	// DefaultHandledTTL is how long a handled event is remembered (EventBridge redelivers within
	// hours, not days).
	DefaultHandledTTL = 7 * 24 * time.Hour
	// maxConflicts bounds the read-modify-write rounds of one change: each round at least one
	// concurrent writer wins, so this outlasts that many writers at once.
	maxConflicts = 32
)

// Store is one cluster's state in its API server. It is safe for concurrent use: every change is an
// optimistic-concurrency update, so concurrent Stores (in one process or many) do not lose changes.
type Store struct {
	client       kubernetes.Interface
	cluster      string
	namespace    string
	clock        clock.PassiveClock
	retry        retry.Policy
	handledLimit int
	handledTTL   time.Duration
	fieldManager string
}

// Option adjusts a Store.
type Option func(*Store)

// WithClock sets the clock that stamps records and judges Lease expiry and handled-event age
// (default: the real clock).
func WithClock(c clock.PassiveClock) Option { return func(s *Store) { s.clock = c } }

// WithNamespace overrides the namespace (default [Namespace]).
func WithNamespace(ns string) Option { return func(s *Store) { s.namespace = ns } }

// WithRetryPolicy sets the retry policy for transient API errors (default retry.DefaultPolicy).
func WithRetryPolicy(p retry.Policy) Option { return func(s *Store) { s.retry = p } }

// WithHandledBounds bounds the handled events kept: at most limit entries, none older than ttl.
func WithHandledBounds(limit int, ttl time.Duration) Option {
	return func(s *Store) { s.handledLimit, s.handledTTL = limit, ttl }
}

// WithFieldManager sets the field manager of writes (default "rekey").
func WithFieldManager(m string) Option { return func(s *Store) { s.fieldManager = m } }

// New returns the Store of cluster (an ACK cluster ID) whose API server client is reached through
// client. It performs no I/O: objects and the namespace are created on the first write.
func New(client kubernetes.Interface, cluster string, opts ...Option) (*Store, error) {
	if client == nil {
		return nil, errors.New("state: nil client")
	}
	if strings.TrimSpace(cluster) == "" {
		return nil, errors.New("state: empty cluster ID")
	}
	s := &Store{
		client:       client,
		cluster:      cluster,
		namespace:    Namespace,
		clock:        clock.RealClock{},
		retry:        retry.DefaultPolicy(),
		handledLimit: DefaultHandledLimit,
		handledTTL:   DefaultHandledTTL,
		fieldManager: "rekey",
	}
	for _, o := range opts {
		o(s)
	}
	switch {
	case s.namespace == "":
		return nil, errors.New("state: empty namespace")
	case s.handledLimit <= 0 || s.handledTTL <= 0:
		return nil, fmt.Errorf("state: handled bounds must be positive (limit %d, ttl %s)", s.handledLimit, s.handledTTL)
	case s.clock == nil:
		return nil, errors.New("state: nil clock")
	}
	return s, nil
}

// Cluster returns the cluster ID the Store belongs to.
func (s *Store) Cluster() string { return s.cluster }

// Namespace returns the namespace the Store writes to.
func (s *Store) Namespace() string { return s.namespace }

// StateName returns the name of the state ConfigMap.
func (s *Store) StateName() string { return "rekey-state-" + nameOf(s.cluster) }

// LeaseName returns the name of the cluster's run Lease.
func (s *Store) LeaseName() string { return "rekey-run-" + nameOf(s.cluster) }

// CheckpointName returns the name of a job's checkpoint ConfigMap.
func CheckpointName(jobID string) string { return "rekey-checkpoint-" + jobID }

var (
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	nonName  = regexp.MustCompile(`[^a-z0-9]+`)
)

// nameOf turns a cluster ID into a DNS-label-safe name part: the ID itself when it is one (ACK IDs
// are), else a readable prefix and a hash that keeps distinct IDs distinct.
func nameOf(cluster string) string {
	if dnsLabel.MatchString(cluster) && len(cluster) <= 40 {
		return cluster
	}
	sum := sha256.Sum256([]byte(cluster))
	clean := strings.Trim(nonName.ReplaceAllString(strings.ToLower(cluster), "-"), "-")
	if len(clean) > 24 {
		clean = strings.TrimRight(clean[:24], "-")
	}
	if clean == "" {
		return "x" + hex.EncodeToString(sum[:8])
	}
	return clean + "-" + hex.EncodeToString(sum[:6])
}

// call runs op with retries of transient errors.
func (s *Store) call(ctx context.Context, op func(ctx context.Context) error) error {
	return retry.Do(ctx, s.retry, op, nil)
}

// denied turns a 401/403 into an error that names what the identity lacks.
func (s *Store) denied(err error, verb, resource string) error {
	if retry.Classify(err) != retry.Denied {
		return err
	}
	return fmt.Errorf("%w (the identity needs %q on %s in namespace %s: apply %s)", err, verb, resource, s.namespace, RBACFile)
}

// isNamespaceMissing reports whether a create failed because the namespace does not exist.
func isNamespaceMissing(err error) bool {
	if !apierrors.IsNotFound(err) {
		return false
	}
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		return false
	}
	d := st.Status().Details
	return d != nil && d.Kind == "namespaces"
}

// ensureNamespace creates the namespace after a create found it missing.
func (s *Store) ensureNamespace(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.namespace, Labels: map[string]string{"app.kubernetes.io/managed-by": "rekey"}}}
	err := s.call(ctx, func(ctx context.Context) error {
		_, err := s.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{FieldManager: s.fieldManager})
		return err
	})
	switch {
	case err == nil, apierrors.IsAlreadyExists(err):
		return nil
	case retry.Classify(err) == retry.Denied:
		return fmt.Errorf("namespace %s does not exist and the identity may not create it (%w): apply %s, which creates it, or grant \"create\" on namespaces", s.namespace, err, RBACFile)
	default:
		return fmt.Errorf("create namespace %s: %w", s.namespace, err)
	}
}

// create creates an object, creating the namespace first when it is missing.
func (s *Store) create(ctx context.Context, resource, name string, op func(ctx context.Context) error) error {
	err := s.call(ctx, op)
	if isNamespaceMissing(err) {
		if err := s.ensureNamespace(ctx); err != nil {
			return err
		}
		err = s.call(ctx, op)
	}
	if err != nil {
		return fmt.Errorf("create %s %s/%s: %w", resource, s.namespace, name, s.denied(err, "create", resource))
	}
	return nil
}

// labels are set on every object the Store writes.
func (s *Store) labels(component string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/managed-by": "rekey",
		"app.kubernetes.io/component":  component,
		"rekey.dev/cluster":            nameOf(s.cluster),
	}
}
