package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/shared/actiontrail"
	"github.com/rekey-dev/rekey/shared/etcdscan/etcdtest"
	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/replicas"
)

// readyz is an API server whose /readyz/kms-providers answers ok.
func readyz(t *testing.T) rest.Interface {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz/kms-providers" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("[+]kms-providers ok\nreadyz check passed\n"))
	}))
	t.Cleanup(srv.Close)
	d, err := discovery.NewDiscoveryClientForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return d.RESTClient()
}

func TestLayerSelection(t *testing.T) {
	f := kmsfake.New()
	f.CreateKey("key-1")
	trail := &fakeTrail{}
	tests := []struct {
		name    string
		in      Inputs
		want    []string
		dflt    bool
		missing []string // InputError.Missing; nil: no error
		errText string
	}{
		{name: "default: kms and audit", in: Inputs{KMS: f, KeyID: "key-1", Trail: trail}, want: []string{LayerKMS, LayerAudit}, dflt: true},
		{name: "default: kms only without a trail", in: Inputs{KMS: f, KeyID: "key-1"}, want: []string{LayerKMS}, dflt: true},
		{name: "explicit subset in canonical order", in: Inputs{Layers: []string{LayerAudit, LayerKMS}, KMS: f, KeyID: "key-1", Trail: trail}, want: []string{LayerKMS, LayerAudit}},
		{name: "explicit storage without etcd", in: Inputs{Layers: []string{LayerStorage}, KMS: f, KeyID: "key-1"}, missing: []string{"Etcd"}, errText: "layer storage needs Etcd"},
		{name: "explicit audit without a trail", in: Inputs{Layers: []string{LayerAudit}, KMS: f, KeyID: "key-1"}, missing: []string{"Trail"}},
		{name: "explicit audit without a key", in: Inputs{Layers: []string{LayerAudit}, Trail: trail}, missing: []string{"KMS", "KeyID"}},
		{name: "explicit convergence without an engine", in: Inputs{Layers: []string{LayerConvergence}}, missing: []string{"Convergence"}},
		{name: "explicit apiserver without a client", in: Inputs{Layers: []string{LayerAPIServer}}, missing: []string{"APIServer"}},
		{name: "unknown layer", in: Inputs{Layers: []string{"etcd"}}, missing: []string{}, errText: `unknown layer "etcd"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Clock = clocktesting.NewFakePassiveClock(testNow)
			r, err := Verify(context.Background(), tt.in)
			if tt.missing != nil {
				var ie *InputError
				if !errors.As(err, &ie) || strings.Join(ie.Missing, ",") != strings.Join(tt.missing, ",") || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err %v, want an InputError missing %v (%q)", err, tt.missing, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ran []string
			for _, l := range r.Layers {
				ran = append(ran, l.Name)
			}
			if strings.Join(ran, ",") != strings.Join(tt.want, ",") || strings.Join(r.RequestedLayers, ",") != strings.Join(tt.want, ",") || r.LayersDefaulted != tt.dflt {
				t.Fatalf("ran %v, requested %v (defaulted %v), want %v (defaulted %v)", ran, r.RequestedLayers, r.LayersDefaulted, tt.want, tt.dflt)
			}
		})
	}
}

// TestNoEvidenceNoPass: kms and apiserver passing, an audit warning, or audit passing (it
// corroborates, never proves what is stored), never make a PASS; one evidence layer passing does.
func TestNoEvidenceNoPass(t *testing.T) {
	f, v2 := rotatedKey(t, testNow.Add(-time.Hour))
	api := readyz(t)
	quiet := &fakeTrail{}
	busy := &fakeTrail{result: actiontrail.Result{Events: []actiontrail.Event{event("Encrypt", DefaultAuditRole, v2, "")}}}
	c := etcdtest.Start(t)
	put(t, c, n("/registry/secrets/", 3, kmsV2Value(v2)))
	tests := []struct {
		name    string
		in      Inputs
		verdict Status
	}{
		{"kms and apiserver pass", Inputs{Layers: []string{LayerKMS, LayerAPIServer}, KMS: f, KeyID: "key-1", APIServer: api}, Fail},
		{"audit warns", Inputs{KMS: f, KeyID: "key-1", APIServer: api, Trail: quiet}, Fail},
		{"nothing runs", Inputs{}, Fail},
		{"audit passes", Inputs{KMS: f, KeyID: "key-1", APIServer: api, Trail: busy}, Fail},
		{"storage and audit pass", Inputs{KMS: f, KeyID: "key-1", APIServer: api, Trail: busy, Etcd: c.KV, Resources: []schema.GroupResource{{Resource: "secrets"}}}, Pass},
		{"storage passes, audit warns", Inputs{KMS: f, KeyID: "key-1", APIServer: api, Trail: quiet, Etcd: c.KV, Resources: []schema.GroupResource{{Resource: "secrets"}}}, Pass},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Clock = clocktesting.NewFakePassiveClock(testNow)
			r, err := Verify(context.Background(), tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if r.Verdict != tt.verdict {
				t.Fatalf("verdict %s, want %s: %v %+v", r.Verdict, tt.verdict, r.Reasons, r.Layers)
			}
			hasReason := strings.Contains(strings.Join(r.Reasons, " "), "no evidence:")
			if hasReason != (tt.verdict == Fail) {
				t.Fatalf("verdict reasons %q", r.Reasons)
			}
			if r.Layer(LayerAPIServer).Status != Pass && tt.in.APIServer != nil {
				t.Fatalf("apiserver layer %+v", r.Layer(LayerAPIServer))
			}
		})
	}
}

func TestReportOutput(t *testing.T) {
	f := kmsfake.New()
	f.CreateKey("key-1")
	r, err := Verify(context.Background(), Inputs{KMS: f, KeyID: "key-1", Clock: clocktesting.NewFakePassiveClock(time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC))})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := "VERDICT: FAIL (checked 2026-11-27T00:00:00Z)\n    - no evidence: none of the layers that prove what is stored (storage, convergence) passed (ran: kms PASS)"
	if !strings.HasPrefix(b.String(), want) || !strings.Contains(b.String(), "\nlayers: kms (every layer whose inputs were given)\n[PASS] kms\n") {
		t.Fatalf("text = %q", b.String())
	}
	j, err := json.Marshal(r)
	if err != nil || !strings.Contains(string(j), `"verdict":"FAIL"`) || !strings.Contains(string(j), `"primaryKeyVersion":"key-1-v1"`) ||
		!strings.Contains(string(j), `"requestedLayers":["kms"]`) {
		t.Fatalf("json = %s %v", j, err)
	}
	if (Report{}).Layer("nope").Status != Skip {
		t.Fatal("absent layer should be SKIP")
	}
}

func TestJoinCounts(t *testing.T) {
	if got := joinCounts(map[string]int{"b": 2, "a": 1}, "="); got != "a=1, b=2" {
		t.Fatalf("joinCounts = %q", got)
	}
	if got := joinCounts(map[string]int{"Encrypt v2": 3}, " x"); got != "Encrypt v2 x3" {
		t.Fatalf("joinCounts = %q", got)
	}
	if got := joinCounts(nil, "="); got != "none" {
		t.Fatalf("joinCounts(nil) = %q", got)
	}
}

// TestConvergencePassJudged: a convergence pass run elsewhere (resumed over several invocations)
// is judged like the one the layer runs: complete with nothing rewritten, objects listed and every
// API server replica covered passes; a rewrite, a failure, an unfinished pass or an empty one fails;
// a clean pass that did not reach every replica, or whose replicas are not known, is a warning (no
// evidence).
func TestConvergencePassJudged(t *testing.T) {
	a, b := replicas.HashID("apiserver-a"), replicas.HashID("apiserver-b")
	two := &replicas.Set{Expected: []replicas.Replica{{ID: a}, {ID: b}}, Source: "2 live API server identity Leases in kube-system"}
	one := &replicas.Set{Expected: []replicas.Replica{{ID: a}}, Source: "1 live API server identity Lease in kube-system"}
	unknown := &replicas.Set{Source: "not known: the identity may not list Leases in kube-system"}
	clean := reencrypt.Summary{Strategy: reencrypt.Rewrite, Complete: true, Total: reencrypt.Counts{Listed: 10, Current: 10},
		Routes: []reencrypt.RouteSummary{{Route: a, Counts: reencrypt.Counts{Listed: 5, Current: 5}}, {Route: b, Counts: reencrypt.Counts{Listed: 5, Current: 5}}}}
	cases := []struct {
		name    string
		mod     func(*reencrypt.Summary)
		set     *replicas.Set
		want    Status
		reasons []string
	}{
		{"clean over both replicas", func(*reencrypt.Summary) {}, two, Pass, []string{"every one of the 2 API server replicas", replicas.Short(a), replicas.Short(b)}},
		{"one replica, one connection", func(s *reencrypt.Summary) { s.Routes = nil }, one, Pass, []string{"every one of the 1 API server replicas"}},
		{"one replica never served", func(s *reencrypt.Summary) {
			s.Routes = []reencrypt.RouteSummary{{Route: a, Counts: reencrypt.Counts{Listed: 10, Current: 10}}}
		}, two, Warn, []string{"1 of the 2 API server replicas served none of it (" + replicas.Short(b) + ")"}},
		{"replicas not known", func(*reencrypt.Summary) {}, unknown, Warn, []string{"the number of API server replicas is not known"}},
		{"no discovery at all", func(s *reencrypt.Summary) { s.Routes = nil }, nil, Warn, []string{"one connection"}},
		{"a route re-dialled mid-pass", func(*reencrypt.Summary) {}, &replicas.Set{Expected: two.Expected, Source: two.Source, Moved: []string{b}}, Warn,
			[]string{"served none of it", "reached another replica"}},
		{"one replica rewrote", func(s *reencrypt.Summary) {
			s.Total.Rewritten, s.Total.Current = 5, 5
			s.Routes[1].Rewritten, s.Routes[1].Current = 5, 0
		}, two, Fail, []string{"by some API server replicas only (" + replicas.Short(b) + " rewrote 5)"}},
		{"rewrote", func(s *reencrypt.Summary) { s.Total.Rewritten, s.Total.Current, s.Routes = 1, 9, nil }, two, Fail, []string{"were stale"}},
		{"failed", func(s *reencrypt.Summary) { s.Total.Failed, s.Total.Current = 1, 9 }, two, Fail, nil},
		{"unfinished", func(s *reencrypt.Summary) { s.Complete, s.Total.NotAttempted, s.Total.Current = false, 5, 5 }, two, Fail, nil},
		{"listed nothing", func(s *reencrypt.Summary) { s.Total, s.Routes = reencrypt.Counts{}, nil }, two, Fail, []string{"listed 0 objects"}},
	}
	for _, c := range cases {
		s := clean
		s.Routes = append([]reencrypt.RouteSummary(nil), clean.Routes...)
		c.mod(&s)
		r, err := Verify(context.Background(), Inputs{Layers: []string{LayerConvergence}, ConvergencePass: &s, Replicas: c.set})
		if err != nil {
			t.Fatal(err)
		}
		l := r.Layer(LayerConvergence)
		text := strings.Join(l.Reasons, "\n")
		if l.Status != c.want || r.Convergence == nil || r.Convergence.Total != s.Total {
			t.Errorf("%s: layer %s (%s), want %s", c.name, l.Status, text, c.want)
			continue
		}
		if (r.Verdict == Pass) != (c.want == Pass) {
			t.Errorf("%s: verdict %s with the layer %s", c.name, r.Verdict, l.Status)
		}
		for _, want := range c.reasons {
			if !strings.Contains(text, want) {
				t.Errorf("%s: reasons lack %q:\n%s", c.name, want, text)
			}
		}
	}
}
