package evidence

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rekey-dev/rekey/shared/reencrypt"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var t0 = time.Date(2026, 12, 7, 17, 2, 0, 0, time.UTC)

// sample is a done record with every section, and a suspicious one from the timer with tricky
// text (pipes, newlines, commas, quotes) in its reasons.
func sample() []Record {
	conv := reencrypt.Counts{Listed: 1203, Current: 1203}
	return []Record{
		{
			Schema: Schema, ID: "job-a-1796662920000", Cluster: "c8f1e2d3a4b5c6d7e8f9a0b1c2d3e4f5a", Job: "job-a",
			Key: "alias/ack-secrets", KeyID: "key-hzz63a1b2c3d4e5f6g7h8", Alias: "alias/ack-secrets",
			FromVersions: []string{"v-1"}, ToVersion: "v-2", Status: "done", Reason: "every object re-encrypted and verified (key version v-2)",
			Trigger: Trigger{Kind: TriggerEvent, Source: "acs.kms", EventID: "ev-1", Name: "CreateKeyVersion", RecordID: "trail-1",
				Actor: "RAM user ops-alice", Time: t0},
			StartedAt: t0.Add(2 * time.Minute), EndedAt: t0.Add(14 * time.Minute),
			Phases: []Phase{
				{Name: "gate", StartedAt: t0.Add(2 * time.Minute), EndedAt: t0.Add(5 * time.Minute)},
				{Name: "pass", StartedAt: t0.Add(5 * time.Minute), EndedAt: t0.Add(11 * time.Minute)},
				{Name: "convergence", StartedAt: t0.Add(11 * time.Minute), EndedAt: t0.Add(13 * time.Minute)},
				{Name: "verifier", StartedAt: t0.Add(13 * time.Minute), EndedAt: t0.Add(14 * time.Minute)},
			},
			Adoption:              &Adoption{Kind: "metrics", Direct: true, Replicas: 2, Detail: "every API server's key-ID hash moved"},
			TimeToAdoptionSeconds: 300,
			Strategy:              &Strategy{Name: "rewrite", Rule: "metrics", Reason: "the API servers write Secrets with KMS v2"},
			Pass:                  reencrypt.Counts{Listed: 1203, Rewritten: 1200, Deleted: 3},
			Convergence:           &conv,
			Replicas:              []string{"3f2a", "9bc1"}, ExpectedReplicas: 2,
			Verdict: "PASS",
			Layers: []Layer{
				{Name: "kms", Status: "PASS", Reasons: []string{"key Enabled, primary v-2"}},
				{Name: "convergence", Status: "PASS", Reasons: []string{"1203 listed, none rewritten", "every replica served part"}},
				{Name: "audit", Status: "WARN", Reasons: []string{"events arrive late | retry"}},
			},
			Retirement:    Retirement{Verdict: "safe", Reason: "no object depends on v-1 (convergence)", Statement: RetirementStatement},
			TrailEventIDs: []string{"trail-1", "trail-2"},
			RekeyVersion:  "v0.9.0 (abc123)",
		},
		{
			Schema: Schema, ID: "job-b-1796670000000", Cluster: "c2", Job: "job-b", Key: "key-hzz63a1b2c3d4e5f6g7h8",
			ToVersion: "v-2", Status: "suspicious", Reason: "the pass rewrote nothing, \"after\" a rotation,\nsee the layers",
			Trigger:   Trigger{Kind: TriggerTimer, Reason: "primary version v-2, last verified v-1 (no event seen)"},
			StartedAt: t0.Add(time.Hour), EndedAt: t0.Add(time.Hour + 40*time.Second),
			Pass:       reencrypt.Counts{Listed: 10, Current: 10},
			Retirement: Retirement{Verdict: "cannot-tell", Statement: RetirementStatement}, RekeyVersion: "v0.9.0 (abc123)",
		},
	}
}

func TestCSVRoundTripsThroughACSVReader(t *testing.T) {
	var b bytes.Buffer
	if err := WriteCSV(&b, sample()); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatalf("csv reader: %v\n%s", err, b.String())
	}
	if len(rows) != 3 || !slices.Equal(rows[0], CSVHeader) {
		t.Fatalf("rows = %d, header %v", len(rows), rows[0])
	}
	col := func(row []string, name string) string { return row[slices.Index(CSVHeader, name)] }
	for i, r := range sample() {
		row := rows[i+1]
		if len(row) != len(CSVHeader) {
			t.Fatalf("row %d has %d fields", i, len(row))
		}
		c := r.Counts()
		for name, want := range map[string]string{
			"record": r.ID, "cluster": r.Cluster, "status": r.Status, "reason": r.Reason, "toVersion": r.ToVersion,
			"triggerEventId": r.Trigger.RecordID, "listed": itoa(c.Listed), "rewritten": itoa(c.Rewritten),
			"endedAt": r.EndedAt.Format(time.RFC3339), "trailEventIds": strings.Join(r.TrailEventIDs, ";"),
		} {
			if got := col(row, name); got != want {
				t.Errorf("record %d column %s = %q, want %q", i, name, got, want)
			}
		}
	}
}

func TestMarkdownGolden(t *testing.T) {
	var b bytes.Buffer
	err := WriteMarkdown(&b, sample(), MarkdownOptions{Generated: t0.Add(24 * time.Hour), Filter: "clusters c8f1e2d3a4b5c6d7e8f9a0b1c2d3e4f5a, c2",
		Unread: []string{"c3: dial tcp 10.0.0.9:6443: connect: connection refused"}})
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "history.md")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./shared/evidence -update)", err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("markdown differs from %s (go test ./shared/evidence -update rewrites it):\n%s", golden, b.String())
	}
	// What a signer must see, whatever the golden file says.
	for _, s := range []string{"## Sign-off", "incomplete", RetirementStatement[:40], `events arrive late \| retry`, "ActionTrail event trail-1"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("markdown lacks %q", s)
		}
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, "|") && strings.Count(strings.ReplaceAll(line, `\|`, ""), "|") < 3 {
			t.Errorf("broken table line %q", line)
		}
	}
}

func TestLogLineHasExactlyTheDocumentedFields(t *testing.T) {
	var b bytes.Buffer
	l := zerolog.New(&b)
	sample()[0].Log(l.Info())
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["message"] != LogMessage {
		t.Fatalf("message = %v", m["message"])
	}
	delete(m, "message")
	delete(m, "level")
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	want := slices.Clone(LogFields)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("log fields = %v, LogFields = %v", got, want)
	}
	if strings.Contains(b.String(), "key-hzz63a1b2c3d4e5f6g7h8") || strings.Contains(b.String(), "ack-secrets") {
		t.Fatalf("the log line carries the key reference unshortened: %s", b.String())
	}
	counts := m["counts"].(map[string]any)
	if counts["listed"].(float64) != 1203 || m["eventId"] != "trail-1" || m["fromVersions"] != "v-1" {
		t.Fatalf("log line = %s", b.String())
	}
}
