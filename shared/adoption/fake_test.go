package adoption

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protowire"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/shared/apimetrics"
)

var secretsGR = schema.GroupResource{Resource: "secrets"}

// replica is a fake API server: it uses key "from" until switchAt, then key "to".
type replica struct {
	from, to string
	switchAt time.Time // zero: never switches
}

// fakeCluster models what the gate relies on: N API servers behind a round-robin load balancer,
// each encrypting with its current key; a write happens when the object changes or its stored key
// differs from the serving replica's (GuaranteedUpdate); etcd holds each object's stored key.
type fakeCluster struct {
	mu       sync.Mutex
	clock    *testingclock.FakeClock
	replicas []replica
	next     int
	rev      int64
	objs     map[string]*fakeObj
	noNS     bool // namespace missing
	requests int
	// keyID, when set, is the KMS plugin's key_id for a key version as /metrics hashes it (a
	// plugin whose key_id is not the version ID); nil: the version ID.
	keyID func(version string) string
}

// metricsHash is the key_id_hash /metrics shows for a key version.
func (f *fakeCluster) metricsHash(version string) string {
	if f.keyID != nil {
		version = f.keyID(version)
	}
	return apimetrics.HashKeyID(version)
}

type fakeObj struct {
	s      corev1.Secret
	stored string // key ID the value is encrypted under
}

func newFakeCluster(fc *testingclock.FakeClock, rs ...replica) *fakeCluster {
	return &fakeCluster{clock: fc, replicas: rs, rev: 100, objs: map[string]*fakeObj{}}
}

// serve picks the next replica and returns its current key.
func (f *fakeCluster) serve() string {
	f.requests++
	r := f.replicas[f.next%len(f.replicas)]
	f.next++
	return r.key(f.clock.Now())
}

func (r replica) key(now time.Time) string {
	if !r.switchAt.IsZero() && !now.Before(r.switchAt) {
		return r.to
	}
	return r.from
}

func (f *fakeCluster) Create(_ context.Context, s *corev1.Secret, _ metav1.CreateOptions) (*corev1.Secret, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.noNS {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, s.Namespace)
	}
	if _, ok := f.objs[s.Name]; ok {
		return nil, apierrors.NewAlreadyExists(secretsGR, s.Name)
	}
	key := f.serve()
	f.rev++
	o := &fakeObj{s: *s.DeepCopy(), stored: key}
	o.s.ResourceVersion = strconv.FormatInt(f.rev, 10)
	f.objs[s.Name] = o
	out := o.s.DeepCopy()
	return out, nil
}

func (f *fakeCluster) Patch(_ context.Context, name string, pt types.PatchType, data []byte, _ metav1.PatchOptions, _ ...string) (*corev1.Secret, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if pt != types.MergePatchType {
		return nil, fmt.Errorf("fake: patch type %s", pt)
	}
	o, ok := f.objs[name]
	if !ok {
		return nil, apierrors.NewNotFound(secretsGR, name)
	}
	var p struct {
		Metadata struct {
			ResourceVersion string            `json:"resourceVersion"`
			Annotations     map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, err
	}
	key := f.serve()
	if p.Metadata.ResourceVersion != "" && p.Metadata.ResourceVersion != o.s.ResourceVersion {
		return nil, apierrors.NewConflict(secretsGR, name, fmt.Errorf("resourceVersion changed"))
	}
	changed := false
	for k, v := range p.Metadata.Annotations {
		if o.s.Annotations[k] != v {
			if o.s.Annotations == nil {
				o.s.Annotations = map[string]string{}
			}
			o.s.Annotations[k] = v
			changed = true
		}
	}
	if changed || o.stored != key {
		f.rev++
		o.s.ResourceVersion = strconv.FormatInt(f.rev, 10)
		o.stored = key
	}
	return o.s.DeepCopy(), nil
}

func (f *fakeCluster) List(_ context.Context, opts metav1.ListOptions) (*corev1.SecretList, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sel, err := labels.Parse(opts.LabelSelector)
	if err != nil {
		return nil, err
	}
	out := &corev1.SecretList{}
	for _, o := range f.objs {
		if sel.Matches(labels.Set(o.s.Labels)) {
			out.Items = append(out.Items, *o.s.DeepCopy())
		}
	}
	return out, nil
}

// Get implements EtcdGetter: the stored value is a KMS v2 EncryptedObject under the stored key.
func (f *fakeCluster) Get(_ context.Context, key string, _ ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range f.objs {
		if "/registry/secrets/"+o.s.Namespace+"/"+o.s.Name == key {
			rv, _ := strconv.ParseInt(o.s.ResourceVersion, 10, 64)
			return &clientv3.GetResponse{Kvs: []*mvccpb.KeyValue{{Key: []byte(key), Value: kmsv2Value(o.stored), ModRevision: rv}}}, nil
		}
	}
	return &clientv3.GetResponse{}, nil
}

// stored returns the key an object is stored under.
func (f *fakeCluster) stored(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.objs[name].stored
}

// rewrite is a write by someone else (a run without the gate): a no-op patch by the next replica.
func (f *fakeCluster) rewrite(t *testing.T, name string) {
	t.Helper()
	if _, err := f.Patch(context.Background(), name, types.MergePatchType, []byte(`{}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// kmsv2Value builds a stored KMS v2 value (HKDF seed) under keyID.
func kmsv2Value(keyID string) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, make([]byte, 40))
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, keyID)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendBytes(b, make([]byte, 32))
	b = protowire.AppendTag(b, 5, protowire.VarintType)
	b = protowire.AppendVarint(b, 1)
	return append([]byte("k8s:enc:kms:v2:alibaba-kms:"), b...)
}

// Scrape implements MetricsScraper: each scrape is served by the next replica, which shows only its
// own series (the old key's Status series stays, with its last timestamp).
func (f *fakeCluster) Scrape(context.Context) (apimetrics.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.next % len(f.replicas)
	f.next++
	r := f.replicas[i]
	now := f.clock.Now()
	id := apimetrics.HashKeyID(fmt.Sprintf("apiserver-%d", i))
	s := apimetrics.Snapshot{Status: []apimetrics.Series{{Provider: "alibaba-kms", KeyIDHash: f.metricsHash(r.from), APIServerIDHash: id, Timestamp: float64(now.Unix())}}}
	if r.key(now) == r.to {
		s.Status[0].Timestamp = float64(r.switchAt.Unix()) - 1
		s.Status = append(s.Status, apimetrics.Series{Provider: "alibaba-kms", KeyIDHash: f.metricsHash(r.to), APIServerIDHash: id, Timestamp: float64(now.Unix())})
	}
	return s, nil
}

// forbiddenScraper is a /metrics the identity may not read.
type forbiddenScraper struct{}

func (forbiddenScraper) Scrape(context.Context) (apimetrics.Snapshot, error) {
	return apimetrics.Snapshot{}, fmt.Errorf("GET /metrics: %w", apimetrics.ErrForbidden)
}

// wait runs g.Wait on the fake clock, stepping it while the gate waits, and returns the result and
// the fake time it took.
func wait(t *testing.T, fc *testingclock.FakeClock, g Gate, primary string) (Evidence, time.Duration, error) {
	t.Helper()
	g.Clock = fc
	type result struct {
		ev  Evidence
		err error
	}
	done := make(chan result, 1)
	start := fc.Now()
	go func() {
		ev, err := g.Wait(context.Background(), primary)
		done <- result{ev, err}
	}()
	for {
		select {
		case r := <-done:
			return r.ev, fc.Since(start), r.err
		default:
		}
		if fc.Since(start) > 2*time.Hour {
			t.Fatal("the gate did not return within 2 fake hours")
		}
		if fc.HasWaiters() {
			fc.Step(100 * time.Millisecond)
		} else {
			time.Sleep(50 * time.Microsecond) // let the gate's goroutine reach its next wait
		}
	}
}
