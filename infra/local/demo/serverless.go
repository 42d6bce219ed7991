package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/seed"
	"github.com/rekey-dev/rekey/infra/local/twin"
	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/handler"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/verify"
)

// ServerlessConfig sets up one run of the serverless story.
type ServerlessConfig struct {
	// Secrets is the number of Secrets to create.
	Secrets int
	// Out receives the timeline.
	Out io.Writer
	// FunctionLog, when set, receives every line the functions print.
	FunctionLog io.Writer
	// Repo is the repository root (default: found from the working directory).
	Repo string
	// Rekey is the path of the rekey binary: the story ends with `rekey status` and
	// `rekey history -o markdown` over the twin ("" skips them).
	Rekey string
}

// timeline prints numbered steps with the time since the start.
type timeline struct {
	out   io.Writer
	start time.Time
	step  int
}

func (tl *timeline) say(format string, a ...any) {
	tl.step++
	fmt.Fprintf(tl.out, "\n[%6.1fs] %2d. %s\n", time.Since(tl.start).Seconds(), tl.step, fmt.Sprintf(format, a...))
}

func (tl *timeline) note(format string, a ...any) {
	fmt.Fprintf(tl.out, "            %s\n", fmt.Sprintf(format, a...))
}

// Serverless tells the serverless story on the local twin: Secrets under key version v1,
// CreateKeyVersion on the local KMS, the event through EventBridge to the rotation function, the
// job it records, an off-peak timer tick outside and then inside the window, re-encryption and the
// verifier's PASS (checked again from etcd), then DisableKey and the alert at the webhook, without
// a single Secret written. It returns an error when any step fails or any proof does not hold.
func Serverless(ctx context.Context, cfg ServerlessConfig) (err error) {
	if cfg.Secrets <= 0 {
		cfg.Secrets = 1000
	}
	tl := &timeline{out: cfg.Out, start: time.Now()}
	tl.say("starting the local cloud shaped like ACK Pro: KMS API stand-in, two kube-apiserver replicas on one etcd behind a " +
		"load balancer that pins connections, each with its own KMS v2 plugin; CS stand-in, EventBridge router, Function " +
		"Compute supervisor; building the functions of s.yaml")
	tw, err := twin.Start(ctx, twin.Options{Repo: cfg.Repo, FunctionLog: cfg.FunctionLog})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer func() {
		if serr := tw.Stop(); serr != nil && err == nil {
			err = fmt.Errorf("demo: %w", serr)
		}
	}()
	v1, err := tw.KMS.PrimaryVersion(ctx)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	tl.note("KMS %s: key %s, primary version %s; plugin calls it as %s", tw.KMS.Endpoint, tw.KMS.KeyID, v1, "aliyuncsmanagedsecurityrole")
	tl.note("cluster %s: load balancer %s in front of %d API server replicas; etcd is not given to the functions (only this demo's proof reads it)",
		tw.ClusterID, tw.Cluster.Server, len(tw.Cluster.Replicas()))
	for _, r := range tw.Cluster.Replicas() {
		tl.note("  replica %d %s: %s", r.Index, r.APIServerIDHash[:len("sha256:")+12], r.Server)
	}
	tl.note("the plugins' KMS v2 key_id is not the version ID (%s for %s); each replica adopts a new version %s after the previous one",
		tw.KeyIDFor(v1), v1, twin.DefaultAdoptSpread)
	tl.note("CS stand-in %s serves the functions' kubeconfig: user %s, the RAM role's numeric ID, bound by %s only",
		tw.CSEndpoint, twin.FunctionUser, twin.RBACFile)
	for _, f := range tw.Functions {
		tl.note("function %-14s timeout %-5s triggers %s (binary built from s.yaml's pre-deploy package)", f.Name, f.Timeout, strings.Join(f.Triggers, ", "))
	}
	tl.note("off-peak window %s %s; alerts go to a local webhook", tw.Env["REKEY_WINDOW"], tw.Env["REKEY_TIMEZONE"])

	admin, err := tw.AdminClient()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	namespaces := []string{"payments", "orders", "identity", "platform"}
	tl.say("creating %d Secrets in %s", cfg.Secrets, strings.Join(namespaces, ", "))
	values, err := seed.Secrets(ctx, admin, seed.Options{Count: cfg.Secrets, Namespaces: namespaces, Size: 256})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := proveAll(ctx, tl, tw, v1); err != nil {
		return err
	}

	tl.say("CreateKeyVersion on the local KMS (Alibaba Cloud SDK, as an operator or a rotation policy would)")
	rotatedAt := time.Now()
	v2, err := tw.Rotate(ctx)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	tl.note("new primary version %s", v2)
	calls := tw.Invocations()
	if err := showEvents(tl, calls, "rekey-rotation"); err != nil {
		return err
	}
	st, err := tw.State()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	pending, err := st.Pending(ctx)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	found := false
	for _, j := range pending {
		tl.note("job recorded in rekey-system: cluster %s, key %s, version %s, not before %s (%s)", j.Cluster, j.Key, j.Version, j.NotBefore.Format(time.RFC3339), j.Reason)
		found = found || j.Version == v2
	}
	if !found {
		return fmt.Errorf("demo: no pending job for version %s after the event", v2)
	}

	tl.note("the replicas pick up %s from their own plugins' Status, tens of seconds apart; nobody waits for them here: the "+
		"function's adoption gate must find out itself (existing Secrets stay under %s)", v2, v1)
	revs, err := tw.SecretRevisions(ctx)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	out, err := tw.OutsideWindowTime(time.Now())
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	tl.say("timer tick at %s: outside the off-peak window, the job waits", local(out, tw))
	ticks, err := tw.Tick(ctx, out)
	if err != nil {
		return fmt.Errorf("demo: tick outside the window: %w", err)
	}
	showCalls(tl, ticks)
	if changed, err := changedSince(ctx, tw, revs); err != nil || changed != 0 {
		return fmt.Errorf("demo: %d Secrets written by a tick outside the window (%v)", changed, err)
	}

	tl.say("timer ticks inside the window: the off-peak function runs the job (KMS guard, adoption gate over every replica, engine " +
		"spread over the replicas, convergence pass that must cover every replica, verifier)")
	_, err = tw.TickUntilVerified(ctx, v2, 10, func(at time.Time, calls []twin.Invocation, err error) {
		tl.note("tick at %s", local(at, tw))
		showCalls(tl, calls)
	})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	tl.note("state: version %s of key %s is verified on cluster %s", v2, tw.KMS.KeyID, tw.ClusterID)
	tl.say("proof from etcd")
	if err := proveAll(ctx, tl, tw, v2); err != nil {
		return err
	}

	tl.say("DisableKey on the local KMS: the API server could no longer decrypt Secrets")
	revs, err = tw.SecretRevisions(ctx)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	before := len(tw.Invocations())
	alerts := len(tw.Webhook.Alerts())
	if err := tw.SetKeyEnabled(ctx, false); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := showEvents(tl, tw.Invocations()[before:], "rekey-rotation"); err != nil {
		return err
	}
	actx, cancel2 := context.WithTimeout(ctx, 30*time.Second)
	defer cancel2()
	got, err := tw.Webhook.Wait(actx, alerts+1)
	if err != nil {
		return fmt.Errorf("demo: no alert at the webhook: %w", err)
	}
	if err := showAlert(tl, got[alerts], tw); err != nil {
		return err
	}
	if changed, err := changedSince(ctx, tw, revs); err != nil || changed != 0 {
		return fmt.Errorf("demo: %d Secrets written after DisableKey (%v)", changed, err)
	}
	tl.note("no run: 0 Secrets written")

	tl.say("EnableKey: the key serves again")
	before, alerts = len(tw.Invocations()), len(tw.Webhook.Alerts())
	if err := tw.SetKeyEnabled(ctx, true); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := showEvents(tl, tw.Invocations()[before:], "rekey-rotation"); err != nil {
		return err
	}
	if got, err := tw.Webhook.Wait(actx, alerts+1); err == nil {
		if err := showAlert(tl, got[alerts], tw); err != nil {
			return err
		}
	}

	tl.say("scanning every function log line, response and alert for credentials and Secret values")
	secrets := make(map[string][]byte, len(values))
	for k, v := range values {
		secrets["value of Secret "+k] = v
	}
	if leaks := tw.Leaks(secrets); len(leaks) != 0 {
		return fmt.Errorf("demo: leaks: %s", strings.Join(leaks, "; "))
	}
	var lines int
	for _, text := range tw.Output() {
		lines += bytes.Count(text, []byte("\n"))
	}
	tl.note("%d lines and bodies scanned for %d credentials and %d Secret values: 0 hits", lines, len(tw.Credentials()), len(secrets))
	if cfg.Rekey != "" {
		if err := statusAndHistory(ctx, tl, tw, cfg.Rekey, rotatedAt, secrets); err != nil {
			return err
		}
	}
	fmt.Fprintf(cfg.Out, "\nPASS: the serverless story holds: every Secret re-encrypted under %s off-peak, verified, evidence kept, and the DisableKey alert delivered\n", v2)
	return nil
}

// statusAndHistory runs `rekey status` over the twin's cluster and `rekey history -o markdown` of
// the rotation (the records since rotatedAt), as an operator would with the twin's settings in the
// environment and an admin kubeconfig; the history is scanned for Secret values.
func statusAndHistory(ctx context.Context, tl *timeline, tw *twin.Twin, rekey string, rotatedAt time.Time, secrets map[string][]byte) error {
	dir, err := os.MkdirTemp("", "rekey-demo-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer os.RemoveAll(dir)
	kc := filepath.Join(dir, "admin.kubeconfig")
	if err := tw.Cluster.WriteKubeconfig(controlplane.AdminUser, kc); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	env := append(os.Environ(),
		config.EnvTargets+"="+tw.ClusterID+"="+tw.KMS.KeyID,
		config.EnvRegion+"="+tw.KMS.Region,
		config.EnvAccountID+"="+tw.KMS.AccountID,
		config.EnvKMSEndpoint+"="+tw.KMS.Endpoint,
		config.EnvActionTrailEndpoint+"="+tw.KMS.Endpoint,
		config.EnvCSEndpoint+"="+tw.CSEndpoint,
		config.EnvEndpointScheme+"=HTTP",
		config.KubeconfigVar(tw.ClusterID)+"="+kc,
		kms.EnvAccessKeyID+"="+tw.KMS.Admin.AccessKeyID,
		kms.EnvAccessKeySecret+"="+tw.KMS.Admin.AccessKeySecret,
	)
	run := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, rekey, args...)
		cmd.Env = env
		var errb bytes.Buffer
		cmd.Stderr = &errb
		out, err := cmd.Output()
		if err != nil {
			return out, fmt.Errorf("demo: rekey %s: %w\n%s%s", strings.Join(args, " "), err, out, errb.String())
		}
		return out, nil
	}
	tl.say("the platform team's morning check: rekey status (REKEY_TARGETS and the kubeconfig from the environment; exit 1 when a cluster is behind for more than 48 h or its last job was not done)")
	tl.note("$ rekey status")
	out, err := run("status")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		tl.note("%s", l)
	}
	since := rotatedAt.Add(-time.Second).UTC().Format(time.RFC3339)
	tl.say("what the auditor receives: the evidence record of this rotation, kept in rekey-system (immutable, the last 100 per cluster)")
	tl.note("$ rekey history -o markdown --since %s", since)
	out, err = run("history", "-o", "markdown", "--since", since)
	if err != nil {
		return err
	}
	if !bytes.Contains(out, []byte("CreateKeyVersion")) {
		return fmt.Errorf("demo: the history of the rotation does not name its trigger:\n%s", out)
	}
	if leaks := tw.LeaksIn(secrets, map[string][]byte{"rekey history": out}); len(leaks) != 0 {
		return fmt.Errorf("demo: leaks: %s", strings.Join(leaks, "; "))
	}
	fmt.Fprintf(tl.out, "\n%s", out)
	return nil
}

// proveAll scans etcd and fails unless every Secret is a KMS v2 object under version.
func proveAll(ctx context.Context, tl *timeline, tw *twin.Twin, version string) error {
	r, err := tw.ScanSecrets(ctx, version)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	printScan(tl, r)
	if r.Stale() != 0 {
		return fmt.Errorf("demo: %d Secrets in etcd are not under %s: %v", r.Stale(), version, r.Offenders)
	}
	tl.note("all %d Secrets in etcd are KMS v2 objects under %s", r.Total, version)
	return nil
}

func printScan(tl *timeline, r etcdscan.Report) {
	tl.note("etcd scan of %s at revision %d: %d values", twin.SecretsPrefix, r.Revision, r.Total)
	classes := make([]string, 0, len(r.ByClass))
	for k := range r.ByClass {
		classes = append(classes, k)
	}
	sort.Strings(classes)
	for _, k := range classes {
		tl.note("  %-60s %6d", k, r.ByClass[k])
	}
}

// showEvents prints the deliveries to function and fails unless one was made and succeeded.
func showEvents(tl *timeline, calls []twin.Invocation, function string) error {
	n := 0
	for _, c := range calls {
		if c.Function != function {
			continue
		}
		n++
		var ev struct {
			ID, Source, Type string
			Data             struct {
				EventName string `json:"eventName"`
			}
		}
		_ = json.Unmarshal(c.Payload, &ev)
		tl.note("EventBridge: %s %s %s (event %s) matched rule %s -> %s", ev.Source, ev.Type, ev.Data.EventName, ev.ID, c.Trigger, c.Function)
		showCalls(tl, []twin.Invocation{c})
		if c.Result.Error != nil {
			return fmt.Errorf("demo: %s failed: %s", c.Function, c.Result.Error.Message)
		}
	}
	if n == 0 {
		return fmt.Errorf("demo: the event reached no %s invocation", function)
	}
	return nil
}

// showCalls prints one line per invocation: request, duration and the response in brief.
func showCalls(tl *timeline, calls []twin.Invocation) {
	for _, c := range calls {
		r := c.Result
		status := "ok"
		if r.TimedOut {
			status = "TIMED OUT"
		} else if r.Error != nil {
			status = "error " + r.Error.Type + ": " + r.Error.Message
		}
		tl.note("%s request %s (retry %d) %s in %s", c.Function, short(r.RequestID), r.RetryCount, status, r.Duration.Round(time.Millisecond))
		if len(r.Body) > 0 {
			for _, line := range summarize(r.Body) {
				tl.note("  %s", line)
			}
		}
	}
}

// summarize renders a function's response as a few lines: decisions for the rotation function,
// the version check and the job for the off-peak one.
func summarize(body []byte) []string {
	var r struct {
		Error, Ignored string
		Decisions      []handler.DecisionResult
		Runs           []handler.ClusterRun
		TriggerTime    time.Time
		InWindow       bool
		Window         string
		Keys           []handler.KeyCheck
		Clusters       []handler.ClusterRun
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return []string{"unreadable response: " + err.Error()}
	}
	var out []string
	if r.Error != "" {
		out = append(out, "error: "+r.Error)
	}
	if r.Ignored != "" {
		out = append(out, "ignored: "+r.Ignored)
	}
	for _, d := range r.Decisions {
		line := fmt.Sprintf("decision %s: %s", d.Kind, d.Reason)
		if d.Recorded != nil {
			line += fmt.Sprintf(" [state: %d job(s) added, %d already pending]", len(d.Recorded.Added), len(d.Recorded.Existing))
		}
		if d.Notified != "" {
			line += " [notice " + d.Notified + "]"
		}
		out = append(out, line)
	}
	if !r.TriggerTime.IsZero() {
		where := "outside"
		if r.InWindow {
			where = "inside"
		}
		out = append(out, fmt.Sprintf("triggerTime %s: %s the window %s", r.TriggerTime.Format(time.RFC3339), where, r.Window))
	}
	for _, k := range r.Keys {
		out = append(out, fmt.Sprintf("version check on %s: %s (primary %s, verified %s)", k.Cluster, k.Result, k.Primary, orNone(k.Verified)))
	}
	for _, c := range append(r.Runs, r.Clusters...) {
		out = append(out, fmt.Sprintf("cluster %s: %s %s", c.Cluster, c.Status, c.Reason))
		for _, j := range c.Jobs {
			out = append(out, jobLines(j)...)
		}
	}
	return out
}

// jobLines describes one job run: its engine and convergence passes and the verifier's verdict.
func jobLines(j handler.JobResult) []string {
	b, err := json.Marshal(j.Outcome.Detail)
	if err != nil {
		return nil
	}
	var d struct {
		Phase       string             `json:"phase"`
		Summary     *reencrypt.Summary `json:"summary"`
		Convergence *reencrypt.Summary `json:"convergence"`
		Adoption    *adoption.Evidence `json:"adoption"`
		Verify      *struct {
			Verdict string `json:"verdict"`
			Layers  []struct {
				Name   string `json:"name"`
				Status string `json:"status"`
			} `json:"layers"`
			Replicas *verify.ReplicaCoverage `json:"replicas"`
		} `json:"verify"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil
	}
	var out []string
	if a := d.Adoption; a != nil {
		out = append(out, "  adoption: "+a.Detail)
	}
	if s := d.Summary; s != nil {
		out = append(out, fmt.Sprintf("  engine pass (%s): %d rewritten, %d already current, %d deleted, %d failed in %.1fs",
			s.Strategy, s.Total.Rewritten, s.Total.Current, s.Total.Deleted, s.Total.Failed, s.DurationSeconds))
	}
	if s := d.Convergence; s != nil {
		out = append(out, fmt.Sprintf("  convergence pass: %d rewritten of %d listed (0 = converged)", s.Total.Rewritten, s.Total.Listed))
	}
	if v := d.Verify; v != nil {
		layers := make([]string, 0, len(v.Layers))
		for _, l := range v.Layers {
			layers = append(layers, l.Name+" "+l.Status)
		}
		out = append(out, fmt.Sprintf("  verifier %s (%s)", v.Verdict, strings.Join(layers, ", ")))
		if c := v.Replicas; c != nil {
			out = append(out, fmt.Sprintf("  convergence covered %d of %d API server replicas (%s)", len(c.Covered), c.Expected, c.Source))
		}
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// showAlert prints an alert and fails unless it names the key, the cluster, an actor and an event.
func showAlert(tl *timeline, a twin.Alert, tw *twin.Twin) error {
	var n policy.Notice
	if err := json.Unmarshal(a.Body, &n); err != nil {
		return fmt.Errorf("demo: alert body is not a notice: %w", err)
	}
	tl.note("webhook received a notice (severity %s): %s", n.Severity, n.Title)
	tl.note("  key %s, clusters %s, action %s, actor %s, event %s/%s", n.Key, strings.Join(n.Clusters, ","), n.Action, n.Actor, n.Event.Source, n.Event.ID)
	tl.note("  %s", n.Impact)
	if !strings.Contains(n.Key, tw.KMS.KeyID) || len(n.Clusters) == 0 || n.Clusters[0] != tw.ClusterID || n.Actor == "" || n.Event.ID == "" {
		return errors.New("demo: the alert does not name the key, the cluster, the actor and the event")
	}
	return nil
}

func changedSince(ctx context.Context, tw *twin.Twin, before map[string]int64) (int, error) {
	after, err := tw.SecretRevisions(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for k, rev := range after {
		if before[k] != rev {
			n++
		}
	}
	return n, nil
}

func local(t time.Time, tw *twin.Twin) string {
	loc, err := time.LoadLocation(tw.Env["REKEY_TIMEZONE"])
	if err != nil {
		return t.UTC().Format(time.RFC3339)
	}
	return t.In(loc).Format("2006-01-02 15:04 MST") + " (" + t.UTC().Format("15:04Z") + ")"
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
