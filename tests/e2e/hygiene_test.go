package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/rekey-dev/rekey/cmd/rekey/cli"
	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/infra/local/twin"
	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/job"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/state"
)

// syncBuffer is a bytes.Buffer safe for the plugin's concurrent log writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// hygiene is the world of TestSecretHygieneAndLeastPrivilege: one twin, the CLI's identity, and
// everything the CLI printed.
type hygiene struct {
	tw         *twin.Twin
	kubeconfig string // the CLI's: user "rekey", bound by exactly infra/rbac/rekey.yaml
	outputs    map[string][]byte
}

// runArgs are the arguments of a gated `rekey run --verify` as the CLI's user, logging at debug
// level.
func (h *hygiene) runArgs(extra ...string) []string {
	return append([]string{"run", "--kubeconfig", h.kubeconfig, "--kms-key-id", h.tw.KMS.KeyID, "--kms-region", h.tw.KMS.Region,
		"--kms-endpoint", h.tw.KMS.Endpoint, "--kms-scheme", "HTTP", "--log-level", "debug", "--progress", "never",
		"--verify", "--actiontrail-endpoint", h.tw.KMS.Endpoint, "--audit-role", kmsstack.PluginRole}, extra...)
}

// cli runs the rekey CLI in process and keeps its output for the scan (it is not logged: debug
// output of hundreds of objects).
func (h *hygiene) cli(t *testing.T, what string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	t0 := time.Now()
	code := cli.Main(args, &out, &errb)
	n := len(h.outputs) / 2
	h.outputs[fmt.Sprintf("rekey %s #%d (%s) stdout", args[0], n, what)] = out.Bytes()
	h.outputs[fmt.Sprintf("rekey %s #%d (%s) stderr", args[0], n, what)] = errb.Bytes()
	t.Logf("rekey %s (%s): exit %d in %s, %d bytes of output", args[0], what, code, time.Since(t0).Round(time.Millisecond), out.Len()+errb.Len())
	return code, out.String(), errb.String()
}

// storedObjects reads everything rekey stores in the cluster (state, checkpoints, Leases, the
// gate's canaries and ledger in rekey-system) through the API, as JSON by a description.
func storedObjects(t *testing.T, cs kubernetes.Interface, when string) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	out := map[string][]byte{}
	keep := func(kind, name string, obj any) {
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprintf("stored %s %s/%s (%s)", kind, state.Namespace, name, when)] = b
	}
	cms, err := cs.CoreV1().ConfigMaps(state.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range cms.Items {
		keep("ConfigMap", o.Name, o)
	}
	leases, err := cs.CoordinationV1().Leases(state.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range leases.Items {
		keep("Lease", o.Name, o)
	}
	secrets, err := cs.CoreV1().Secrets(state.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range secrets.Items {
		keep("Secret", o.Name, o)
	}
	return out
}

// TestSecretHygieneAndLeastPrivilege runs demo-sized work (300 Secrets with random values, two
// rotations) through the functions (the twin: EventBridge, FC, CS kubeconfig, the job under
// exactly infra/rbac/rekey-function.yaml) and through the CLI (run and verify, text and JSON,
// debug logs, as a user bound by exactly infra/rbac/rekey.yaml), with Secrets encrypted by the
// KMS v2 plugin. Then it takes each permission of both shipped RBAC files away in turn and shows
// what it is needed for (least privilege). Last, it scans every log line (functions, CLI, plugin),
// every response (function results, alerts, CLI output), every object rekey stored in the
// cluster and every ActionTrail record of the KMS stand-in for every Secret value (raw, base64,
// base64url, hex) and every credential of the twin: there must be none.
func TestSecretHygieneAndLeastPrivilege(t *testing.T) {
	start := time.Now()
	plugin := &syncBuffer{}
	// The functions log at debug: one line per object, the most text to scan.
	// The single-API-server twin: what this test checks (leaks, least privilege) does not depend
	// on replicas, and it runs rekey many times.
	tw := startTwin(t, twin.Options{Single: true, PluginLog: plugin, Env: map[string]string{config.EnvLogLevel: "debug"}})
	h := &hygiene{tw: tw, outputs: map[string][]byte{}}
	admin := typed(t, tw.Cluster)
	ctx := context.Background()
	const n = 300
	values := createSecrets(t, admin, n, "hygiene-a", "hygiene-b")
	if err := twin.ApplyRBAC(ctx, admin, cliRBACFile, ""); err != nil {
		t.Fatal(err)
	}
	h.kubeconfig = impersonatingKubeconfig(t, tw.Cluster, cliUser)
	// The CLI's KMS credential (the functions have their own, from the FC context).
	t.Setenv(kms.EnvAccessKeyID, tw.KMS.Admin.AccessKeyID)
	t.Setenv(kms.EnvAccessKeySecret, tw.KMS.Admin.AccessKeySecret)
	stored := map[string][]byte{}
	keepStored := func(when string) {
		for k, v := range storedObjects(t, admin, when) {
			stored[k] = v
		}
	}

	t.Run("functions", func(t *testing.T) {
		t0 := time.Now()
		v2, err := tw.Rotate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		calls := tickUntilVerified(t, tw, v2, 5)
		if got := jobStatuses(t, calls); len(got) == 0 || got[len(got)-1] != "done" {
			t.Fatalf("job statuses %v, want the last done", got)
		}
		requireAllUnder(t, tw, v2, n)
		keepStored("after the functions' job")
		t.Logf("functions: rotation to %s, %d Secrets re-encrypted and verified in %s", v2, n, time.Since(t0).Round(time.Millisecond))
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("cli", func(t *testing.T) {
		t0 := time.Now()
		v3, err := tw.Rotate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		audit := []string{"--actiontrail-endpoint", tw.KMS.Endpoint, "--audit-role", kmsstack.PluginRole}
		code, _, stderr := h.cli(t, "after a rotation, text", h.runArgs()...)
		if code != cli.ExitOK {
			t.Fatalf("rekey run: exit %d\n%s", code, tail([]byte(stderr), 30))
		}
		requireAllUnder(t, tw, v3, n)
		if code, _, stderr := h.cli(t, "again, json", h.runArgs("--output", "json")...); code != cli.ExitOK {
			t.Fatalf("rekey run --output json: exit %d\n%s", code, tail([]byte(stderr), 30))
		}
		verify := append([]string{"verify", "--kubeconfig", h.kubeconfig, "--kms-key-id", tw.KMS.KeyID, "--kms-region", tw.KMS.Region,
			"--kms-endpoint", tw.KMS.Endpoint, "--kms-scheme", "HTTP", "--etcd-endpoints", tw.Cluster.EtcdEndpoint}, audit...)
		for _, format := range []string{"text", "json"} {
			if code, stdout, stderr := h.cli(t, format, append(verify, "--output", format)...); code != cli.ExitOK {
				t.Fatalf("rekey verify --output %s: exit %d\n%s\n%s", format, code, tail([]byte(stdout), 30), tail([]byte(stderr), 10))
			}
		}
		keepStored("after the CLI")
		t.Logf("cli: rotation to %s, run (text, json) and verify (text, json) in %s", v3, time.Since(t0).Round(time.Millisecond))
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("job on the wire", func(t *testing.T) {
		// The functions' job (shared/job with the state store) in process, as the functions'
		// identity, through a transport that records every request and response body.
		t0 := time.Now()
		rec := &recorder{}
		cfg := tw.Cluster.RestConfig(twin.FunctionUser)
		cfg.QPS, cfg.Burst = -1, 0
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { rec.next = rt; return rec })
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		store, err := state.New(cs, tw.ClusterID)
		if err != nil {
			t.Fatal(err)
		}
		fc := tw.FunctionCredential
		kc, err := tw.KMS.Client(kms.Credentials{AccessKeyID: fc.AccessKeyID, AccessKeySecret: fc.AccessKeySecret, SecurityToken: fc.SecurityToken})
		if err != nil {
			t.Fatal(err)
		}
		logs := &syncBuffer{}
		log := zerolog.New(logs).Level(zerolog.DebugLevel)
		out, err := job.Run(ctx, job.Spec{Cluster: tw.ClusterID, KeyID: tw.KMS.KeyID, Reason: "hygiene: the job on the wire"},
			job.Deps{Rest: cfg, KMS: kc, State: store, Holder: "hygiene-wire", Logger: &log})
		if err != nil || out.Status != job.StatusDone {
			t.Fatalf("job: %s (%s), %v", out.Status, out.Reason, err)
		}
		b, err := json.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		h.outputs["in-process job log"] = logs.Bytes()
		h.outputs["in-process job outcome"] = b
		rec.mu.Lock()
		bodies := slices.Clone(rec.bodies)
		rec.mu.Unlock()
		wire := twin.NewScanner()
		for k, v := range values {
			wire.AddValue("value of Secret "+k, v)
		}
		for i, body := range bodies {
			wire.Scan(fmt.Sprintf("HTTP body %d", i), body)
		}
		for _, hit := range wire.Hits() {
			t.Error(hit)
		}
		if c := wire.Counts(); c.Texts < 2*n {
			t.Fatalf("recorded %d bodies: the recorder did not see the job", c.Texts)
		}
		t.Logf("job on the wire: %+v in %s", wire.Counts(), time.Since(t0).Round(time.Millisecond))
		// Positive control: the recorder sees data when a client asks for it.
		if _, err := cs.CoreV1().Secrets("hygiene-a").Get(ctx, "secret-00000", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
		rec.mu.Lock()
		wire.Scan("control read", rec.bodies[len(rec.bodies)-1])
		rec.mu.Unlock()
		if len(wire.Hits()) != 1 {
			t.Fatal("the recorder does not see Secret data even in a typed GET: the check above proves nothing")
		}
	})

	t.Run("least privilege", func(t *testing.T) {
		t0 := time.Now()
		rows := cliPrivilege(t, h)
		rows = append(rows, functionPrivilege(t, h)...)
		logPrivilegeTable(t, rows)
		keepStored("after the privilege cases")
		t.Logf("least privilege: %d permissions in %s", len(rows), time.Since(t0).Round(time.Millisecond))
	})

	t.Run("scan", func(t *testing.T) {
		s := twin.NewScanner()
		s.AddTwin(tw)
		for k, v := range values {
			s.AddValue("value of Secret "+k, v)
		}
		texts := map[string][]byte{}
		for where, text := range tw.Output() {
			texts[where] = text
		}
		for where, text := range h.outputs {
			texts[where] = text
		}
		for where, text := range stored {
			texts[where] = text
		}
		texts["KMS v2 plugin log"] = plugin.Bytes()
		recs, err := json.Marshal(tw.KMS.Server().Records())
		if err != nil {
			t.Fatal(err)
		}
		texts["KMS stand-in ActionTrail records"] = recs
		for where, text := range texts {
			s.Scan(where, text)
		}
		c := s.Counts()
		t.Logf("secret hygiene scan: %d bytes in %d texts (%d function logs and responses, %d CLI outputs, %d stored objects, plugin log %d bytes, %d ActionTrail records), %d needles (%d Secret values x 4 forms + %d credentials x 2 forms), %d hits",
			c.Bytes, c.Texts, len(tw.Output()), len(h.outputs), len(stored), len(texts["KMS v2 plugin log"]), len(tw.KMS.Server().Records()),
			c.Needles, len(values), len(tw.Credentials()), c.Hits)
		for _, hit := range s.Hits() {
			t.Error(hit)
		}
		// The scan looked at real material: the plugin logged, the CLI and the functions spoke, the
		// state and canaries were there, KMS recorded calls.
		if len(texts["KMS v2 plugin log"]) == 0 || len(recs) < 1000 || len(stored) < 3 || len(h.outputs) < 8 {
			t.Errorf("too little scanned: plugin log %d bytes, records %d bytes, %d stored objects, %d CLI outputs",
				len(texts["KMS v2 plugin log"]), len(recs), len(stored), len(h.outputs))
		}
		// Positive control: the same scanner finds a value in a Secret read with its data.
		sec, err := admin.CoreV1().Secrets("hygiene-a").Get(ctx, "secret-00000", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(sec)
		ctl := twin.NewScanner()
		ctl.AddValue("value", values["hygiene-a/secret-00000"])
		ctl.Scan("a Secret read with its data", b)
		if len(ctl.Hits()) != 1 {
			t.Fatal("the scanner does not find a Secret's value in the Secret itself: the scan above proves nothing")
		}
	})
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}
