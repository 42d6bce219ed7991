package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rekey-dev/rekey/shared/reencrypt"
)

func TestRunHelpDocumentsMaxSpeed(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"run", "--help"}, &out, &errb); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"--max-speed", "maintenance windows", "adapts how many it sends"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("run --help lacks %q", want)
		}
	}
	cmd := newRunCommand(&out, &errb)
	if err := cmd.ParseFlags([]string{"--max-speed"}); err != nil {
		t.Fatal(err)
	}
	if v, err := cmd.Flags().GetBool("max-speed"); err != nil || !v {
		t.Fatalf("--max-speed parsed as %v, %v", v, err)
	}
}

func TestSummarySaysHowTheRunWasPaced(t *testing.T) {
	s := reencrypt.Summary{Strategy: reencrypt.Rewrite, Complete: true,
		Pace: &reencrypt.PaceSummary{Mode: "bounded: FlowSchema rekey does not exist", Limit: 2, Peak: 5, Max: 32, BaselineMs: 1.25, BaselineLimit: 8,
			Decreases: 7, Throttled: 1, TooManyRequests: 3}}
	var out bytes.Buffer
	if err := printSummary(&out, "text", s); err != nil {
		t.Fatal(err)
	}
	want := "pace: bounded: FlowSchema rekey does not exist; 2 in flight at the end (peak 5 of --concurrency 32), latency 1.2 ms at 8 in flight, 7 slowdowns, 1 throttled, 3 429s retried; --max-speed runs 32 at once"
	if !strings.Contains(out.String(), want) {
		t.Fatalf("summary lacks the pace line %q:\n%s", want, out.String())
	}
	s.Pace = nil // --max-speed
	out.Reset()
	if err := printSummary(&out, "text", s); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "pace:") {
		t.Fatalf("an unpaced run's summary has a pace line:\n%s", out.String())
	}
}
