package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rekey-dev/rekey/cmd/rekey/cli"
	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/faultproxy"
	"github.com/rekey-dev/rekey/infra/local/kmsapi"
	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/infra/local/seed"
	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// TestMain keeps the credentials chain away from the ECS metadata address and gives the CLI the
// KMS stand-in's admin credential (the same for every stack; t.Setenv cannot be used in parallel
// tests).
func TestMain(m *testing.M) {
	admin := kmsapi.DevCredential()
	os.Setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
	os.Setenv(kms.EnvAccessKeyID, admin.AccessKeyID)
	os.Setenv(kms.EnvAccessKeySecret, admin.AccessKeySecret)
	os.Exit(m.Run())
}

// env is one case's world: the KMS v2 chain, a control plane encrypting Secrets through it, the
// seeded Secrets and a concurrent writer.
type env struct {
	t     *testing.T
	st    *kmsstack.Stack
	c     *controlplane.Cluster
	admin kubernetes.Interface
	calls *kmsCalls
	w     *writer
	// quiet is the namespace the writer leaves alone: only rekey writes there (see passAt); busy
	// are the writer's.
	quiet string
	busy  []string
	// version is the key version every Secret must end under (set by rotate).
	version string
}

// newEnv starts the stack and the control plane, creates rekey-system (as the shipped RBAC
// manifest does) and seeds n Secrets over three namespaces named prefix-a, -b and -c (under the
// key's first version). The writer works in -a and -c; -b is quiet.
func newEnv(t *testing.T, n int, prefix string) *env {
	t.Helper()
	calls := &kmsCalls{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := kmsstack.Start(ctx, kmsstack.Options{Dir: t.TempDir(), OnRecord: calls.record})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Stop)
	c := controlplane.StartT(t, controlplane.Options{
		Encryption: &controlplane.Encryption{Providers: []controlplane.Provider{st.Provider(), controlplane.Identity()}},
	})
	cfg := c.RestConfig(controlplane.AdminUser)
	cfg.Timeout = 20 * time.Second // a writer call never hangs on a dead server
	admin, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, c: c, admin: admin, calls: calls, quiet: prefix + "-b"}
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer scancel()
	if _, err := admin.CoreV1().Namespaces().Create(sctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "rekey-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	busy := []string{prefix + "-a", prefix + "-c"}
	data, err := seed.Secrets(sctx, admin, seed.Options{Count: n, Namespaces: []string{busy[0], e.quiet, busy[1]}, Workers: 8})
	if err != nil {
		t.Fatal(err)
	}
	for k := range data {
		if strings.HasPrefix(k, e.quiet+"/") {
			delete(data, k)
		}
	}
	e.busy = busy
	e.w = newWriter(admin, busy, data, 2)
	t.Cleanup(func() { e.w.stop() })
	return e
}

// freshWriter replaces a stopped writer with a new one whose books start from the Secrets as they
// are now (after prove checked the old books), for a case with several phases.
func (e *env) freshWriter() {
	e.t.Helper()
	e.w.stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := map[string][]byte{}
	for _, ns := range e.busy {
		got, err := secretsIn(ctx, e.admin, ns)
		if err != nil {
			e.t.Fatal(err)
		}
		for k, v := range got {
			data[k] = v
		}
	}
	e.w = newWriter(e.admin, e.busy, data, 2)
}

// rotate creates a new key version and makes the API server write under it: the plugin picks up
// the new primary within its status interval (1s), and a restarted API server asks for it at once
// instead of at its next minute-long poll.
func (e *env) rotate() string {
	e.t.Helper()
	v, err := e.st.Rotate()
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		// The plugin refreshes the primary every second; poll its answer through the API server.
		if werr := e.waitAPIServer(ctx, v, 2*time.Second); werr == nil {
			break
		}
		if err := e.c.RestartAPIServer(ctx); err != nil {
			e.t.Fatal(err)
		}
		if ctx.Err() != nil {
			e.t.Fatalf("the API server did not adopt key version %s", v)
		}
	}
	e.version = v
	return v
}

func (e *env) waitAPIServer(ctx context.Context, v string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return e.st.WaitAPIServer(ctx, e.c, v)
}

// kubeconfig writes an admin kubeconfig for the API server.
func (e *env) kubeconfig() string {
	e.t.Helper()
	path := filepath.Join(e.t.TempDir(), "kubeconfig")
	if err := e.c.WriteKubeconfig(controlplane.AdminUser, path); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// runArgs is `rekey run` as an operator runs it after a rotation: the KMS guard, the adoption gate
// and the judgement with etcd evidence, JSON summary.
func (e *env) runArgs(kubeconfig string, extra ...string) []string {
	return append([]string{"run", "--kubeconfig", kubeconfig,
		"--kms-key-id", e.st.KeyID, "--kms-region", e.st.Region, "--kms-endpoint", e.st.Endpoint, "--kms-scheme", "HTTP",
		"--etcd-endpoints", e.c.EtcdEndpoint, "--output", "json", "--progress", "never", "--concurrency", "16"}, extra...)
}

// cliRun is one `rekey run` in-process.
type cliRun struct {
	code           int
	stdout, stderr string
	summary        *reencrypt.Summary
	adoption       *adoption.Evidence
	took           time.Duration
	end            time.Time
}

// complete reports whether the run ended with exit 0 and a complete pass with nothing failed.
func (r cliRun) complete() bool {
	return r.code == cli.ExitOK && r.summary != nil && r.summary.Complete && r.summary.Total.Failed == 0 && r.summary.Total.NotAttempted == 0
}

// brief is the run's outcome in one line for the report.
func (r cliRun) brief() string {
	if r.summary == nil {
		return fmt.Sprintf("exit %d, %s", r.code, firstLine(r.stderr))
	}
	s := r.summary
	out := fmt.Sprintf("exit %d, %d rewritten, %d current, %d failed, %d not attempted, %d retries", r.code,
		s.Total.Rewritten, s.Total.Current, s.Total.Failed, s.Total.NotAttempted, s.Retries)
	if !s.Complete {
		out += ", stopped: " + s.StopReason
	}
	return out
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "rekey: ") && !strings.HasPrefix(l, "rekey: adoption") {
			return strings.TrimPrefix(l, "rekey: ")
		}
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// cli runs rekey in-process and parses its JSON summary when it printed one.
func (e *env) cli(args ...string) cliRun {
	e.t.Helper()
	var out, errb bytes.Buffer
	began := time.Now()
	code := cli.Main(args, &out, &errb)
	r := cliRun{code: code, stdout: out.String(), stderr: errb.String(), took: time.Since(began), end: time.Now()}
	if strings.TrimSpace(r.stdout) != "" {
		var rep struct {
			reencrypt.Summary
			Adoption *adoption.Evidence `json:"adoption"`
		}
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			e.t.Fatalf("rekey %s: JSON summary: %v\n%s", strings.Join(args, " "), err, r.stdout)
		}
		r.summary, r.adoption = &rep.Summary, rep.Adoption
	}
	e.t.Logf("rekey run -> %s in %s\nstderr: %s", r.brief(), r.took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
	return r
}

// passAt counts rekey's rewrites in the quiet namespace from now on (etcd PUTs there: the writer
// never writes there). A pass goes through the namespaces in order, so the first rewrite there
// means a third of the pass is done: the moment to inject a fault.
func (e *env) passAt() *atomic.Int64 {
	var n atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	wch := e.c.Etcd.Watch(ctx, "/registry/secrets/"+e.quiet+"/", clientv3.WithPrefix())
	go func() {
		for resp := range wch {
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypePut {
					n.Add(1)
				}
			}
		}
	}()
	return &n
}

// when calls fault (once) as soon as count reaches at, and reports when it did.
func when(count func() int64, at int64, fault func()) (fired <-chan time.Time, stop func()) {
	ch := make(chan time.Time, 1)
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if count() >= at {
					now := time.Now()
					fault()
					ch <- now
					return
				}
			}
		}
	}()
	var once sync.Once
	return ch, func() { once.Do(func() { close(done) }) }
}

// proof is how a case ended, from etcd and the writer's books.
type proof struct {
	scan      etcdscan.Report
	lost      int
	lostWhat  []string
	confirm   cliRun
	writerOps string
}

// reencrypted is the report's "Secrets re-encrypted at the end" cell.
func (p proof) reencrypted() string {
	pct := 0.0
	if p.scan.Total > 0 {
		pct = 100 * float64(p.scan.Matching) / float64(p.scan.Total)
	}
	return fmt.Sprintf("%d/%d (%.0f%%)", p.scan.Matching, p.scan.Total, pct)
}

// prove stops the writer and proves the case's end state: no lost update, a confirming run (as
// the operator's next run) that completes and rewrites nothing, and a raw etcd scan that finds
// every Secret under e.version and as many as that run listed.
func (e *env) prove(kubeconfig string) proof {
	e.t.Helper()
	e.w.stop()
	var p proof
	p.writerOps = e.w.ops()
	// Each step has its own time: on a busy machine the writer's check and the confirming run
	// once used up a minute shared with the scan.
	vctx, vcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer vcancel()
	p.lostWhat = e.w.verify(vctx, e.t)
	p.lost = len(p.lostWhat)
	p.confirm = e.cli(e.runArgs(kubeconfig)...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	scan, err := etcdscan.Scan(ctx, e.c.Etcd, "/registry/secrets/", func(v storedvalue.Value) bool {
		return v.Provider == storedvalue.KMSv2 && v.KeyName == kmsstack.ProviderName && v.KeyID == e.version
	}, etcdscan.Options{})
	if err != nil {
		e.t.Fatalf("scan etcd: %v", err)
	}
	p.scan = scan
	e.t.Logf("writer: %s; lost updates %d; etcd: %d of %d Secrets under %s", p.writerOps, p.lost, scan.Matching, scan.Total, e.version)
	for _, l := range p.lostWhat {
		e.t.Errorf("lost update: %s", l)
	}
	if scan.Stale() != 0 || scan.Total == 0 {
		e.t.Errorf("etcd: %d of %d Secrets are not under %s: %v", scan.Stale(), scan.Total, e.version, scan.Offenders)
	}
	s := p.confirm.summary
	switch {
	case !p.confirm.complete():
		e.t.Errorf("the confirming run did not complete: %s", p.confirm.brief())
	case s.Total.Rewritten != 0:
		e.t.Errorf("the confirming run rewrote %d Secrets: the runs before it left them stale", s.Total.Rewritten)
	case s.Total.Listed != int64(scan.Total):
		e.t.Errorf("the confirming run listed %d Secrets, etcd holds %d", s.Total.Listed, scan.Total)
	}
	return p
}

// kmsCalls counts the KMS API's calls per caller and action from its ActionTrail records.
type kmsCalls struct {
	mu sync.Mutex
	n  map[string]int64 // "plugin Encrypt", "rekey DescribeKey"
}

func (k *kmsCalls) record(r kmsapi.Record) {
	who := "rekey"
	if r.UserIdentity.Type == "assumed-role" {
		who = "plugin"
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.n == nil {
		k.n = map[string]int64{}
	}
	k.n[who+" "+r.EventName]++
}

// snapshot returns the counts so far.
func (k *kmsCalls) snapshot() map[string]int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make(map[string]int64, len(k.n))
	for a, n := range k.n {
		out[a] = n
	}
	return out
}

// since returns the calls made after before (a snapshot), without the admin's DisableKey and
// EnableKey (the test's, not rekey's).
func (k *kmsCalls) since(before map[string]int64) (byAction map[string]int64, rekey, plugin int64) {
	byAction = map[string]int64{}
	for a, n := range k.snapshot() {
		if d := n - before[a]; d > 0 && a != "rekey DisableKey" && a != "rekey EnableKey" {
			byAction[a] = d
			if strings.HasPrefix(a, "rekey ") {
				rekey += d
			} else {
				plugin += d
			}
		}
	}
	return byAction, rekey, plugin
}

// secretsIn lists the Secrets of namespace ns.
func secretsIn(ctx context.Context, cs kubernetes.Interface, ns string) (map[string][]byte, error) {
	list, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list secrets in %s: %w", ns, err)
	}
	out := make(map[string][]byte, len(list.Items))
	for _, s := range list.Items {
		out[ns+"/"+s.Name] = s.Data["v"]
	}
	return out, nil
}

// proxy starts a fault proxy (HTTPS: a kubeconfig's credentials are only sent over TLS) in
// front of the API server and returns it with a kubeconfig that goes through it.
func (e *env) proxy() (*faultproxy.Proxy, string) {
	e.t.Helper()
	p, err := faultproxy.StartTLS(e.c.Server, e.c.CAData)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(p.Close)
	path := filepath.Join(e.t.TempDir(), "kubeconfig-proxy")
	if err := e.c.WriteKubeconfig(controlplane.AdminUser, path); err != nil {
		e.t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, cl := range cfg.Clusters {
		cl.Server, cl.CertificateAuthorityData = p.URL(), p.CertificatePEM()
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		e.t.Fatal(err)
	}
	return p, path
}
