package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/retry"
	"github.com/rekey-dev/rekey/shared/state"
)

const (
	account = "5068000000000001"
	region  = "cn-hangzhou"
	// keyA is the key of the shared/events fixtures.
	keyA = "key-hzz63a1b2c3d4e5f6g7h8"
	c1   = "c1"
	c2   = "c2"
)

// eventTime is the time of the kms-createkeyversion fixture.
var eventTime = time.Date(2026, 11, 28, 9, 21, 32, 0, time.UTC)

// env is one handler's world made of fakes: KMS (kmsfake), clusters on fake clientsets, a job
// runner and a notifier that record what they are asked.
type env struct {
	t        *testing.T
	cfg      config.Config
	clock    *clocktesting.FakeClock
	kms      *kmsfake.Fake
	stores   map[string]*state.Store
	clients  map[string]*fake.Clientset // each cluster's API (reactors make it fail)
	openErr  map[string]error
	notifier *fakeNotifier
	runner   *fakeRunner
	logs     *bytes.Buffer
	// secrets and countErr answer CountSecrets per cluster (0 when not set).
	secrets  map[string]int64
	countErr map[string]error
}

func newEnv(t *testing.T, vars map[string]string) *env {
	t.Helper()
	if vars == nil {
		vars = map[string]string{}
	}
	if _, ok := vars[config.EnvTargets]; !ok {
		vars[config.EnvTargets] = c1 + "=" + keyA + "," + c2 + "=" + keyA
	}
	cfg, err := config.Load(func(k string) string { return vars[k] }, config.Own{Region: region, AccountID: account})
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(eventTime)
	k := kmsfake.New()
	k.Clock = clk
	k.CreateKey(keyA)
	e := &env{t: t, cfg: cfg, clock: clk, kms: k, stores: map[string]*state.Store{}, clients: map[string]*fake.Clientset{},
		openErr: map[string]error{}, notifier: &fakeNotifier{}, logs: &bytes.Buffer{}}
	clusters := []string{c1, c2}
	for _, tg := range cfg.Targets {
		if !slices.Contains(clusters, tg.Cluster) {
			clusters = append(clusters, tg.Cluster)
		}
	}
	for _, c := range clusters {
		cs := fake.NewClientset()
		s, err := state.New(cs, c, state.WithClock(clk),
			state.WithRetryPolicy(retry.Policy{MaxAttempts: 2, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond}))
		if err != nil {
			t.Fatal(err)
		}
		e.stores[c], e.clients[c] = s, cs
	}
	e.runner = &fakeRunner{env: e, outcomes: map[string][]JobOutcome{}}
	return e
}

func (e *env) deps() Deps {
	l := zerolog.New(e.logs)
	return Deps{Config: e.cfg, KMS: e.kms, Clusters: e, Notifier: e.notifier, Run: e.runner.run, Clock: e.clock, Logger: &l, CountSecrets: e.countSecrets}
}

// countSecrets is the fake SecretCounter.
func (e *env) countSecrets(_ context.Context, c Cluster) (int64, error) {
	if err := e.countErr[c.ID]; err != nil {
		return -1, err
	}
	return e.secrets[c.ID], nil
}

// Open implements ClusterOpener.
func (e *env) Open(_ context.Context, id string) (Cluster, error) {
	if err := e.openErr[id]; err != nil {
		return Cluster{}, err
	}
	s, ok := e.stores[id]
	if !ok {
		return Cluster{}, fmt.Errorf("no cluster %s", id)
	}
	return Cluster{ID: id, Rest: &rest.Config{Host: "https://" + id}, Store: s}, nil
}

func (e *env) rotation() *Rotation {
	e.t.Helper()
	h, err := NewRotation(e.deps())
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

func (e *env) offpeak() *OffPeak {
	e.t.Helper()
	h, err := NewOffPeak(e.deps())
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

func (e *env) pending(cluster string) []state.JobRecord {
	e.t.Helper()
	p, err := e.stores[cluster].Pending(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// verify records version as verified on cluster, as a finished job does.
func (e *env) verify(cluster, version string) {
	e.t.Helper()
	ctx := context.Background()
	rec, err := e.stores[cluster].AddJobs(ctx, policy.Job{Cluster: cluster, Key: keyA, Version: version, Reason: "test", NotBefore: eventTime})
	if err != nil {
		e.t.Fatal(err)
	}
	jobs := append(rec.Added, rec.Existing...)
	if len(jobs) == 0 {
		return
	}
	if _, err := e.stores[cluster].Complete(ctx, jobs[0], version); err != nil {
		e.t.Fatal(err)
	}
}

type fakeNotifier struct {
	mu   sync.Mutex
	sent []policy.Notice
	errs []error // returned by the next calls, in order
}

func (n *fakeNotifier) Send(_ context.Context, notice policy.Notice) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.errs) > 0 {
		err := n.errs[0]
		n.errs = n.errs[1:]
		return err
	}
	n.sent = append(n.sent, notice)
	return nil
}

// fakeRunner stands in for job.Run: it answers the queued outcome of the request's cluster (done
// with the key's primary version when none is queued) and, like the real job, completes a done
// job in the cluster's state.
type fakeRunner struct {
	env      *env
	mu       sync.Mutex
	outcomes map[string][]JobOutcome
	errs     map[string]error
	reqs     []JobRequest
	// deadlines are the jobs' context deadlines (zero: none), in order.
	deadlines []time.Time
	// noComplete makes done jobs leave their state alone (the handler must then complete them).
	noComplete bool
}

func (r *fakeRunner) queue(cluster string, outs ...JobOutcome) {
	r.outcomes[cluster] = append(r.outcomes[cluster], outs...)
}

func (r *fakeRunner) run(ctx context.Context, req JobRequest) (JobOutcome, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	dl, _ := ctx.Deadline()
	r.deadlines = append(r.deadlines, dl)
	var out JobOutcome
	if q := r.outcomes[req.Cluster.ID]; len(q) > 0 {
		out, r.outcomes[req.Cluster.ID] = q[0], q[1:]
	} else {
		md, err := r.env.kms.DescribeKey(ctx, req.Target.Key)
		if err != nil {
			r.mu.Unlock()
			return JobOutcome{}, err
		}
		out = JobOutcome{Status: StatusDone, Reason: "verified", VerifiedVersion: md.PrimaryKeyVersion}
	}
	err := r.errs[req.Cluster.ID]
	r.mu.Unlock()
	if err != nil {
		return JobOutcome{}, err
	}
	if out.Status == StatusDone && !r.noComplete {
		if _, err := req.Cluster.Store.Complete(ctx, req.Job, out.VerifiedVersion); err != nil {
			return JobOutcome{}, err
		}
	}
	return out, nil
}

func (r *fakeRunner) clusters() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, q := range r.reqs {
		out = append(out, q.Cluster.ID)
	}
	return out
}

// kmsEvent is the kms-createkeyversion fixture with eventName (and the CloudEvent id) replaced.
func kmsEvent(t *testing.T, name, id string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "events", "testdata", "kms-createkeyversion.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["id"] = id
	data := m["data"].(map[string]any)
	data["eventName"] = name
	data["eventId"] = "rec-" + id
	if name != "CreateKeyVersion" {
		delete(data, "responseElements")
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func timerPayload(t *testing.T, at time.Time) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]string{"triggerTime": at.UTC().Format(time.RFC3339), "triggerName": "offpeak", "payload": `{"mode":"offpeak"}`})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// inWindow is a trigger time inside the default window (01:00-05:00 Asia/Shanghai = 17:00-21:00 UTC).
var inWindow = time.Date(2026, 11, 28, 18, 0, 0, 0, time.UTC)

func credsFunc(id string) alicloudProvider {
	return alicloud.CredentialsFunc(func(context.Context) (alicloud.Credentials, error) {
		return alicloud.Credentials{AccessKeyID: id, AccessKeySecret: "s"}, nil
	})
}

type alicloudProvider = alicloud.Provider
