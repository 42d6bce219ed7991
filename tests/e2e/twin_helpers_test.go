package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/infra/local/twin"
	"github.com/rekey-dev/rekey/shared/handler"
	"github.com/rekey-dev/rekey/shared/job"
	"github.com/rekey-dev/rekey/shared/state"
)

// Function names in s.yaml.
const (
	rotationFn = "rekey-rotation"
	offpeakFn  = "rekey-offpeak"
)

// startTwin starts the local cloud with the repository's s.yaml and real function binaries. On
// failure the cleanup prints the tail of every function's output first.
func startTwin(t *testing.T, opts twin.Options) *twin.Twin {
	t.Helper()
	opts.Repo = "../.."
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	t0 := time.Now()
	tw, err := twin.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("twin up in %s: cluster %s, key %s, functions %+v", time.Since(t0).Round(time.Millisecond), tw.ClusterID, tw.KMS.KeyID, tw.Functions)
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range tw.Functions {
				logs, _ := tw.FC.Logs(f.Name)
				t.Logf("last output of %s:\n%s", f.Name, tail(logs, 40))
			}
		}
		if err := tw.Stop(); err != nil {
			t.Error(err)
		}
	})
	return tw
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// rotationResults decodes the answers of the rotation function's invocations; a failed invocation
// fails the test.
func rotationResults(t *testing.T, calls []twin.Invocation) []handler.RotationResult {
	t.Helper()
	var out []handler.RotationResult
	for _, c := range calls {
		if c.Function != rotationFn {
			continue
		}
		if c.Result.Error != nil {
			t.Fatalf("%s (request %s) failed: %s: %s", c.Function, c.Result.RequestID, c.Result.Error.Type, c.Result.Error.Message)
		}
		var r handler.RotationResult
		if err := json.Unmarshal(c.Result.Body, &r); err != nil {
			t.Fatalf("%s answered %s: %v", c.Function, c.Result.Body, err)
		}
		out = append(out, r)
	}
	return out
}

// offpeakResult decodes the answer of one off-peak invocation (a failed one decodes to a zero
// result with ok false).
func offpeakResult(t *testing.T, c twin.Invocation) (handler.OffPeakResult, bool) {
	t.Helper()
	if c.Result.Error != nil {
		return handler.OffPeakResult{}, false
	}
	var r handler.OffPeakResult
	if err := json.Unmarshal(c.Result.Body, &r); err != nil {
		t.Fatalf("%s answered %s: %v", c.Function, c.Result.Body, err)
	}
	return r, true
}

// brief describes an off-peak invocation in one line for the test log.
func brief(t *testing.T, c twin.Invocation) string {
	t.Helper()
	r, ok := offpeakResult(t, c)
	if !ok {
		return "error " + c.Result.Error.Type + ": " + c.Result.Error.Message
	}
	var b bytes.Buffer
	for _, k := range r.Keys {
		b.WriteString("check " + k.Result + " (primary " + k.Primary + ", verified " + k.Verified + "); ")
	}
	for _, cl := range r.Clusters {
		b.WriteString(cl.Cluster + " " + cl.Status + ": " + cl.Reason + "; ")
		for _, j := range cl.Jobs {
			b.WriteString(phaseTimes(j.Outcome.Detail))
		}
	}
	return "inWindow=" + boolText(r.InWindow) + " " + b.String() + " in " + c.Result.Duration.Round(time.Millisecond).String()
}

func boolText(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// jobStatuses lists the status of every job an off-peak invocation ran.
func jobStatuses(t *testing.T, calls []twin.Invocation) []string {
	t.Helper()
	var out []string
	for _, c := range calls {
		r, ok := offpeakResult(t, c)
		if !ok {
			out = append(out, "invocation error")
			continue
		}
		for _, cl := range r.Clusters {
			for _, j := range cl.Jobs {
				out = append(out, string(j.Outcome.Status))
			}
		}
	}
	return out
}

func pendingJobs(t *testing.T, tw *twin.Twin) []state.JobRecord {
	t.Helper()
	st, err := tw.State()
	if err != nil {
		t.Fatal(err)
	}
	p, err := st.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// changedSecrets counts Secrets whose etcd revision differs from before (new ones included).
func changedSecrets(t *testing.T, tw *twin.Twin, before map[string]int64) []string {
	t.Helper()
	after, err := tw.SecretRevisions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for k, rev := range after {
		if before[k] != rev {
			out = append(out, k)
		}
	}
	return out
}

func secretRevisions(t *testing.T, tw *twin.Twin) map[string]int64 {
	t.Helper()
	r, err := tw.SecretRevisions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitAPIServer waits until the API server writes with version.
func waitAPIServer(t *testing.T, tw *twin.Twin, version string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	if err := tw.WaitAPIServer(ctx, version); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server writes with %s after %s", version, time.Since(t0).Round(time.Millisecond))
}

// tickUntilVerified fires in-window ticks until version is verified, logging each tick.
func tickUntilVerified(t *testing.T, tw *twin.Twin, version string, maxTicks int) []twin.Invocation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	calls, err := tw.TickUntilVerified(ctx, version, maxTicks, func(at time.Time, calls []twin.Invocation, err error) {
		for _, c := range calls {
			t.Logf("tick %s: %s", at.Format(time.RFC3339), brief(t, c))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return calls
}

// tickWhileProgressing fires in-window ticks until version is verified, as long as the job keeps
// moving: it fails when a job reports StalledNotice invocations in a row without progress (with
// the job's reason), never because the machine is slow. maxTicks is only a guard against a test
// that loops for ever.
func tickWhileProgressing(t *testing.T, tw *twin.Twin, version string, maxTicks int) []twin.Invocation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	var all []twin.Invocation
	for i := 0; i < maxTicks; i++ {
		at, err := tw.WindowTime(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		calls, err := tw.Tick(ctx, at)
		all = append(all, calls...)
		if err != nil {
			t.Fatalf("tick %d: %v", i+1, err)
		}
		for _, c := range calls {
			t.Logf("tick %s: %s", at.Format(time.RFC3339), brief(t, c))
			r, _ := offpeakResult(t, c)
			for _, cl := range r.Clusters {
				for _, j := range cl.Jobs {
					if j.Outcome.Stalled >= handler.StalledNotice {
						t.Fatalf("job %s made no progress in %d invocations in a row: %s", j.ID, j.Outcome.Stalled, j.Outcome.NoProgress)
					}
				}
			}
		}
		got, err := tw.VerifiedVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got == version {
			return all
		}
	}
	t.Fatalf("%s not verified after %d ticks, every one of them making progress", version, maxTicks)
	return nil
}

// requireAllUnder fails unless every Secret in etcd is a KMS v2 object under version.
func requireAllUnder(t *testing.T, tw *twin.Twin, version string, atLeast int) {
	t.Helper()
	r, err := tw.ScanSecrets(context.Background(), version)
	if err != nil {
		t.Fatal(err)
	}
	if r.Stale() != 0 || r.Total < atLeast {
		t.Fatalf("etcd: %d of %d Secrets not under %s (want >= %d, all under it): %v %v", r.Stale(), r.Total, version, atLeast, r.RedactedByClass(), r.Offenders)
	}
	t.Logf("etcd: all %d Secrets under %s", r.Total, version)
}

// phaseTimes says how long each phase of a job outcome's detail took (job.Outcome.Phases), and
// how long its adoption gate waited: where an invocation's time went.
func phaseTimes(detail any) string {
	raw, err := json.Marshal(detail)
	if err != nil {
		return ""
	}
	var o job.Outcome
	if json.Unmarshal(raw, &o) != nil {
		return ""
	}
	var parts []string
	for _, p := range o.Phases {
		if !p.EndedAt.IsZero() {
			parts = append(parts, p.Name+" "+p.EndedAt.Sub(p.StartedAt).Round(time.Millisecond).String())
		}
	}
	if o.Adoption != nil {
		parts = append(parts, fmt.Sprintf("adoption %s waited %.1fs", o.Adoption.Kind, o.Adoption.WaitedSeconds))
	}
	if len(parts) == 0 {
		return ""
	}
	return "phases: " + strings.Join(parts, ", ") + "; "
}
