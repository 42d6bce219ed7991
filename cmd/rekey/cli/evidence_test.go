package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/storagemode"
)

// TestRunReportShowsDecisionAndVerdict: the summary names the strategy rule, its evidence and
// warnings, and a suspicious verdict with its causes, in text and in JSON (summary fields at the
// top level).
func TestRunReportShowsDecisionAndVerdict(t *testing.T) {
	d, err := storagemode.Decide(storagemode.Inputs{Requested: reencrypt.Auto, ServerVersion: "v1.37.2",
		Etcd: &storagemode.Evidence{Source: storagemode.SourceEtcd, Unavailable: "no --etcd-endpoints"}})
	if err != nil {
		t.Fatal(err)
	}
	s := reencrypt.Summary{Strategy: d.Strategy, Complete: true, Total: reencrypt.Counts{Listed: 5, Current: 5},
		Resources: []reencrypt.ResourceSummary{{Resource: "secrets", Counts: reencrypt.Counts{Listed: 5, Current: 5}}}}
	v := storagemode.Judge(storagemode.PassFacts{Strategy: s.Strategy, Total: s.Total, Decision: &d,
		Rotation: &storagemode.Rotation{KeyID: "key-1", PrimaryVersion: "v2"}})
	r := runReport{Summary: s, StrategyDecision: &d, Verdict: &v}

	var text bytes.Buffer
	if err := printRunReport(&text, "text", r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"strategy rewrite chosen by server-version (requested auto)", "no evidence from etcd: no --etcd-endpoints",
		"WARNING: no evidence of the provider", "SUSPICIOUS: suspicious: 0 rewritten after a rotation", "likely causes:", "--strategy annotate", "rekey verify"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text summary lacks %q:\n%s", want, text.String())
		}
	}

	var js bytes.Buffer
	if err := printRunReport(&js, "json", r); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Strategy         string `json:"strategy"`
		Total            reencrypt.Counts
		StrategyDecision storagemode.Decision `json:"strategyDecision"`
		Verdict          storagemode.Verdict  `json:"verdict"`
	}
	if err := json.Unmarshal(js.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Strategy != "rewrite" || got.Total.Current != 5 || got.StrategyDecision.Rule != storagemode.SourceVersion ||
		len(got.StrategyDecision.Warnings) != 1 || got.Verdict.Status != storagemode.StatusSuspicious || len(got.Verdict.Causes) == 0 {
		t.Fatalf("json summary: %s", js.String())
	}
}

// TestRunHelpDocumentsStrategyAndSuspicion: `rekey run --help` says how auto decides and when a
// pass is suspicious.
func TestRunHelpDocumentsStrategyAndSuspicion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"run", "--help"}, &out, &errb); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"etcd (--etcd-endpoints): the newest stored values", "KMS v1 anywhere -> annotate",
		"with a WARNING", "SUSPICIOUS (exit 1", "Without --kms-key-id there is no known rotation", "--etcd-endpoints"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("run --help lacks %q", want)
		}
	}
}
