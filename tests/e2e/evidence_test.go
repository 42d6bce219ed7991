package e2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/rekey-dev/rekey/cmd/rekey/cli"
	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/twin"
	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/evidence"
	"github.com/rekey-dev/rekey/shared/state"
	"github.com/rekey-dev/rekey/shared/status"
)

// twinRecords returns the evidence records kept in the twin's cluster, oldest first, with their
// ConfigMaps' bodies.
func twinRecords(t *testing.T, tw *twin.Twin) ([]evidence.Record, []state.StoredRecord) {
	t.Helper()
	st, err := tw.State()
	if err != nil {
		t.Fatal(err)
	}
	stored, err := st.Evidence(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []evidence.Record
	for _, s := range stored {
		var r evidence.Record
		if err := json.Unmarshal(s.Body, &r); err != nil {
			t.Fatalf("record %s: %v", s.ID, err)
		}
		out = append(out, r)
	}
	return out, stored
}

// recordsFor returns the records of the jobs of version v asked for by an event.
func recordsFor(rs []evidence.Record, v string) []evidence.Record {
	var out []evidence.Record
	for _, r := range rs {
		if r.ToVersion == v && r.Trigger.Kind == evidence.TriggerEvent {
			out = append(out, r)
		}
	}
	return out
}

// rotationTrailID returns the ActionTrail eventId of the CreateKeyVersion event the twin delivered
// to the rotation function for version v (the newest such event).
func rotationTrailID(t *testing.T, tw *twin.Twin) string {
	t.Helper()
	var id string
	for _, c := range tw.Invocations() {
		var ev struct {
			Data struct {
				EventID   string `json:"eventId"`
				EventName string `json:"eventName"`
			} `json:"data"`
		}
		if json.Unmarshal(c.Payload, &ev) == nil && ev.Data.EventName == "CreateKeyVersion" {
			id = ev.Data.EventID
		}
	}
	if id == "" {
		t.Fatal("no CreateKeyVersion event was delivered")
	}
	return id
}

// requireRotationRecord checks the one evidence record of the rotation to v against what etcd
// shows and what triggered it, and scans it for Secret values.
func requireRotationRecord(t *testing.T, tw *twin.Twin, v string, secrets map[string][]byte) evidence.Record {
	t.Helper()
	all, stored := twinRecords(t, tw)
	rs := recordsFor(all, v)
	if len(rs) != 1 {
		t.Fatalf("%d evidence records of the rotation to %s, want exactly 1: %+v", len(rs), v, rs)
	}
	r := rs[0]
	if r.Status != "done" || r.Verdict != "PASS" || r.Cluster != tw.ClusterID || r.Key != tw.KMS.KeyID {
		t.Fatalf("record %s: status %s verdict %s cluster %s key %s", r.ID, r.Status, r.Verdict, r.Cluster, r.Key)
	}
	if trail := rotationTrailID(t, tw); r.Trigger.RecordID != trail || r.Trigger.Name != "CreateKeyVersion" || !slices.Contains(r.TrailEventIDs, trail) {
		t.Fatalf("trigger %+v, trail IDs %v: want the CreateKeyVersion event %s", r.Trigger, r.TrailEventIDs, trail)
	}
	scan, err := tw.ScanSecrets(context.Background(), v)
	if err != nil {
		t.Fatal(err)
	}
	if r.Convergence == nil || r.Convergence.Listed != int64(scan.Total) || r.Convergence.Current != int64(scan.Matching) || r.Convergence.Rewritten != 0 {
		t.Fatalf("record counts %+v, etcd %d Secrets, %d under %s", r.Convergence, scan.Total, scan.Matching, v)
	}
	if r.Pass.Rewritten == 0 || len(r.Replicas) != len(tw.Cluster.Replicas()) || r.Retirement.Statement == "" || len(r.Phases) < 3 {
		t.Fatalf("record %+v", r)
	}
	texts := map[string][]byte{}
	for _, s := range stored {
		texts["evidence record "+s.ID] = s.Body
	}
	if leaks := tw.LeaksIn(secrets, texts); len(leaks) > 0 {
		t.Fatalf("evidence records leak: %v", leaks)
	}
	return r
}

// evidenceAfterSecondRotation: the second rotation added a second record; a record cannot be
// changed on a real API server; `rekey status` and `rekey history` read them through the load
// balancer with the operator's kubeconfig.
func evidenceAfterSecondRotation(t *testing.T, tw *twin.Twin, first evidence.Record, v string, secrets map[string][]byte) {
	second := requireRotationRecord(t, tw, v, secrets)
	if second.ID == first.ID || second.Job == first.Job {
		t.Fatalf("the second rotation's record %s is the first's", second.ID)
	}
	all, stored := twinRecords(t, tw)
	if len(recordsFor(all, first.ToVersion)) != 1 {
		t.Fatal("the first rotation's record is gone")
	}

	// Immutable: the API server refuses a change.
	admin := typed(t, tw.Cluster)
	ctx := context.Background()
	st, _ := tw.State()
	name := st.EvidenceName(stored[len(stored)-1].ID)
	cm, err := admin.CoreV1().ConfigMaps(st.Namespace()).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["record.json"] = `{"status":"done","verdict":"PASS"}`
	if _, err := admin.CoreV1().ConfigMaps(st.Namespace()).Update(ctx, cm, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "immutable") {
		t.Fatalf("update of evidence record %s: %v, want it refused as immutable", name, err)
	}
	if cm.Immutable == nil || !*cm.Immutable {
		t.Fatalf("evidence ConfigMap %s is not immutable", name)
	}

	// The CLI reads the records as the functions configured them.
	kc := filepath.Join(t.TempDir(), "admin.kubeconfig")
	if err := tw.Cluster.WriteKubeconfig(controlplane.AdminUser, kc); err != nil {
		t.Fatal(err)
	}
	t.Setenv(config.EnvKMSEndpoint, tw.KMS.Endpoint)
	t.Setenv(config.EnvCSEndpoint, tw.CSEndpoint)
	t.Setenv(config.EnvActionTrailEndpoint, tw.KMS.Endpoint)
	t.Setenv(config.EnvEndpointScheme, "HTTP")
	fleet := []string{"--targets", tw.ClusterID + "=" + tw.KMS.KeyID, "--region", tw.KMS.Region, "--account-id", tw.KMS.AccountID,
		"--kubeconfig", tw.ClusterID + "=" + kc}
	var out, errb bytes.Buffer
	code := cli.Main(append([]string{"status", "-o", "json"}, fleet...), &out, &errb)
	var rep status.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("status (exit %d): %v\n%s\n%s", code, err, out.String(), errb.String())
	}
	if code != cli.ExitOK || !rep.Healthy || len(rep.Rows) != 1 || rep.Rows[0].Verified != v || rep.Rows[0].Behind ||
		rep.Rows[0].LastOutcome == nil || rep.Rows[0].LastOutcome.Record != second.ID {
		t.Fatalf("status exit %d: %s", code, out.String())
	}

	out.Reset()
	errb.Reset()
	if code := cli.Main(append([]string{"history", "-o", "csv", "--key", tw.KMS.KeyID}, fleet...), &out, &errb); code != cli.ExitOK {
		t.Fatalf("history: exit %d\n%s", code, errb.String())
	}
	rows, err := csv.NewReader(&out).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, row := range rows[1:] {
		ids = append(ids, row[0])
	}
	if len(rows)-1 != len(all) || !slices.Contains(ids, first.ID) || !slices.Contains(ids, second.ID) {
		t.Fatalf("history csv records %v, kept %d", ids, len(all))
	}
	out.Reset()
	if code := cli.Main(append([]string{"history", "-o", "markdown"}, fleet...), &out, &errb); code != cli.ExitOK ||
		!strings.Contains(out.String(), second.ID) || !strings.Contains(out.String(), "Sign-off") {
		t.Fatalf("history markdown: exit %d\n%s", code, out.String())
	}
	if leaks := tw.LeaksIn(secrets, map[string][]byte{"rekey history": out.Bytes()}); len(leaks) > 0 {
		t.Fatalf("history leaks: %v", leaks)
	}
}

// stateEvidence: under the function's RBAC, beyond 100 records per cluster the oldest go first,
// and the API server refuses to change a record once written (even for the admin).
func stateEvidence(t *testing.T, c *controlplane.Cluster, fn kubernetes.Interface) {
	st := stateStore(t, fn, "c-evidence", nil)
	ctx := context.Background()
	epoch := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	name := func(i int) string { return fmt.Sprintf("job-%03d", i) }
	const n = 103
	for i := 0; i < n; i++ {
		at := epoch.Add(time.Duration(i) * time.Minute)
		body, _ := json.Marshal(evidence.Record{ID: name(i), EndedAt: at, Status: "done"})
		if err := st.AddEvidence(ctx, name(i), at, body, 0); err != nil {
			t.Fatal(err)
		}
	}
	kept, err := st.Evidence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) != state.DefaultEvidenceKeep || kept[0].ID != name(n-state.DefaultEvidenceKeep) || kept[len(kept)-1].ID != name(n-1) {
		t.Fatalf("kept %d records, first %s last %s; want the newest %d", len(kept), kept[0].ID, kept[len(kept)-1].ID, state.DefaultEvidenceKeep)
	}
	admin := typed(t, c)
	cm, err := admin.CoreV1().ConfigMaps(st.Namespace()).Get(ctx, st.EvidenceName(name(n-1)), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["record.json"] = `{"status":"done"}`
	if _, err := admin.CoreV1().ConfigMaps(st.Namespace()).Update(ctx, cm, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "immutable") {
		t.Fatalf("admin update of an evidence record: %v, want it refused as immutable", err)
	}
}
