package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/cluster"
	"github.com/rekey-dev/rekey/shared/job"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/verify"
)

type runFlags struct {
	kubeconfig, context   string
	strategy              string
	resources             []string
	namespaces, excludeNS []string
	selector              string
	concurrency           int
	maxSpeed              bool
	qps                   float32
	burst                 int
	pageSize              int64
	dryRun                bool
	output                string
	logLevel              string
	timeout               time.Duration
	progress              string
	kms                   kmsFlags
	force                 bool
	etcd                  etcdFlags
	adoption              adoptionFlags
	verify                bool
	trailEndpoint         string
	auditRole, auditUser  string
}

func newRunCommand(stdout, stderr io.Writer) *cobra.Command {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Rewrite objects so the API server stores them under its current encryption key",
		Long: `run lists objects with the metadata API (never their data) and sends each a small merge patch.

` + strategyHelp + `

Exit status: 0 every object rewritten, current or deleted; 1 some failed, or the pass is
suspicious; 2 usage, configuration or permission error.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runRun(cmd.Context(), f, stdout, stderr) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&f.context, "context", "", "kubeconfig context (default the current context)")
	fs.StringVar(&f.strategy, "strategy", "auto", "auto, rewrite (alias replace) or annotate")
	fs.StringSliceVar(&f.resources, "resources", []string{"secrets"}, "namespaced resources to process, e.g. secrets,configmaps,deployments.apps")
	fs.StringArrayVarP(&f.namespaces, "namespace", "n", nil, "only this namespace (repeatable; default all)")
	fs.StringArrayVar(&f.excludeNS, "exclude-namespace", nil, "skip this namespace (repeatable)")
	fs.StringVarP(&f.selector, "selector", "l", "", "label selector")
	fs.IntVar(&f.concurrency, "concurrency", reencrypt.DefaultConcurrency, "most patches in flight: by default rekey adapts how many it sends to the API server's latency and 429s, up to this")
	fs.BoolVar(&f.maxSpeed, "max-speed", false, "patch with all --concurrency workers at once, without adapting to the API server's latency (for maintenance windows)")
	fs.Float32Var(&f.qps, "qps", 0, "client-side request rate limit per second (0: none; the API server's priority and fairness still applies)")
	fs.IntVar(&f.burst, "burst", 0, "client-side burst (default: qps)")
	fs.Int64Var(&f.pageSize, "page-size", reencrypt.DefaultPageSize, "objects per list page")
	fs.BoolVar(&f.dryRun, "dry-run", false, "list and count only; patch nothing")
	fs.StringVarP(&f.output, "output", "o", "text", "summary format: text or json (json goes to stdout)")
	fs.StringVar(&f.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	fs.DurationVar(&f.timeout, "timeout", 0, "give up after this long (0: no limit)")
	fs.StringVar(&f.progress, "progress", "auto", "progress bar: auto (on a terminal), always, never")
	f.kms.register(fs)
	fs.BoolVar(&f.force, "force", false, "run even when the KMS key check fails (the key is disabled, pending deletion or unusable)")
	f.etcd.register(fs)
	f.adoption.register(fs)
	fs.BoolVar(&f.verify, "verify", false, "after a complete pass, run the verifier (kms and audit with --kms-key-id, storage with --etcd-endpoints, convergence, apiserver) and exit 1 unless it passes")
	fs.StringVar(&f.trailEndpoint, "actiontrail-endpoint", "", "with --verify: ActionTrail endpoint host[:port] (default the region's VPC endpoint)")
	fs.StringVar(&f.auditRole, "audit-role", verify.DefaultAuditRole, "with --verify: RAM role the cluster's KMS plugin assumes (the identity expected in ActionTrail)")
	fs.StringVar(&f.auditUser, "audit-user", "", "with --verify: RAM user the cluster's KMS plugin calls KMS as, instead of --audit-role")
	return cmd
}

func (f *runFlags) validate() error {
	if f.output != "text" && f.output != "json" {
		return usagef("--output must be text or json, not %q", f.output)
	}
	if f.concurrency < 1 || f.concurrency > 1024 {
		return usagef("--concurrency must be between 1 and 1024, not %d", f.concurrency)
	}
	if f.pageSize < 1 || f.pageSize > 10000 {
		return usagef("--page-size must be between 1 and 10000, not %d", f.pageSize)
	}
	if f.qps < 0 || f.burst < 0 {
		return usagef("--qps and --burst must not be negative")
	}
	if f.timeout < 0 {
		return usagef("--timeout must not be negative")
	}
	switch f.progress {
	case "auto", "always", "never":
	default:
		return usagef("--progress must be auto, always or never, not %q", f.progress)
	}
	return nil
}

func newLogger(level string, w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Nop(), usagef("--log-level must be debug, info, warn or error, not %q", level)
	}
	if isTerminal(w) {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func runRun(ctx context.Context, f *runFlags, stdout, stderr io.Writer) error {
	if err := f.validate(); err != nil {
		return err
	}
	strategy, err := reencrypt.ParseStrategy(f.strategy)
	if err != nil {
		return &usageError{err}
	}
	log, err := newLogger(f.logLevel, stderr)
	if err != nil {
		return err
	}
	if err := f.adoption.validate(); err != nil {
		return err
	}
	if f.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.timeout)
		defer cancel()
	}
	kmsClient, kmsCfg, err := f.kms.client(os.Getenv)
	if err != nil {
		return err
	}
	cfg, err := cluster.Load(cluster.Connection{Kubeconfig: f.kubeconfig, Context: f.context, QPS: f.qps, Burst: f.burst, UserAgent: "rekey"})
	if err != nil {
		return err
	}
	etcdKV, err := f.etcd.client()
	if err != nil {
		return err
	}
	if etcdKV != nil {
		defer etcdKV.Close()
	}
	mode, _ := adoption.ParseKind(f.adoption.mode)
	if mode == adoption.Etcd && etcdKV == nil && f.kms.keyID != "" && !f.dryRun {
		return usagef("--adoption etcd needs --etcd-endpoints")
	}
	bar := newProgress(f.progress, stderr, f.dryRun)
	deps := job.Deps{
		Rest: cfg, KMS: kmsClient, Etcd: kvOrNil(etcdKV), EtcdPrefix: f.etcd.prefix, EtcdEndpoints: f.etcd.endpoints, Logger: &log,
		Adoption: job.Adoption{Mode: mode, Settle: f.adoption.settle, Timeout: f.adoption.timeout, Confirmations: f.adoption.confirmations, NoNudge: !f.adoption.nudge},
		Say:      func(msg string) { fmt.Fprintf(stderr, "rekey: %s\n", msg) },
		OnListed: bar.grow, OnObject: bar.step,
	}
	if f.verify && kmsCfg != nil {
		if deps.Trail, err = newTrail(kmsCfg, f.trailEndpoint); err != nil {
			return err
		}
		deps.AuditRole, deps.AuditUser = f.auditRole, f.auditUser
	}
	spec := job.Spec{
		KeyID: f.kms.keyID, Strategy: strategy, Resources: f.resources, Namespaces: f.namespaces, ExcludeNamespaces: f.excludeNS,
		LabelSelector: f.selector, Concurrency: f.concurrency, PageSize: f.pageSize, DryRun: f.dryRun, Force: f.force, SkipVerify: !f.verify,
		MaxSpeed: f.maxSpeed,
	}
	out, err := job.Run(ctx, spec, deps)
	bar.finish()
	return reportRun(stdout, f.output, out, err)
}

// reportRun prints a job's outcome as `rekey run` always has and chooses the exit status.
func reportRun(stdout io.Writer, format string, out job.Outcome, err error) error {
	if out.Status == job.StatusRefused {
		return &keyError{fmt.Errorf("refusing to run: %s (pass --force to run anyway)", out.Reason)}
	}
	if out.Summary == nil {
		if err != nil {
			return err
		}
		var se *job.SpecError
		if errors.As(out.Err, &se) {
			return &usageError{out.Err}
		}
		if out.Err != nil {
			return out.Err
		}
		return fmt.Errorf("the job ended %s before its pass: %s", out.Status, out.Reason)
	}
	report := runReport{Summary: *out.Summary, StrategyDecision: out.Strategy, Verdict: out.Verdict}
	if err := printGatedReport(stdout, format, report, out.Adoption, out.Verify); err != nil {
		return err
	}
	if !out.Summary.Complete {
		cause := out.Err
		if cause == nil {
			cause = err
		}
		return fmt.Errorf("run stopped: %w", cause)
	}
	if err != nil {
		return err
	}
	if out.Status != job.StatusDone {
		return &exitError{code: ExitFailed}
	}
	return nil
}

// keyError reports a KMS key that cannot serve the cluster (exit 2: a configuration problem).
type keyError struct{ err error }

func (e *keyError) Error() string { return e.err.Error() }
func (e *keyError) Unwrap() error { return e.err }

func isConfigOrPermission(err error) bool {
	var ke *keyError
	if errors.As(err, &ke) {
		return true
	}
	var ce *cluster.ConfigError
	var ae *cluster.AccessError
	var pe *reencrypt.PermissionError
	return errors.As(err, &ce) || errors.As(err, &ae) || errors.As(err, &pe)
}

// progress wraps an optional progress bar; the zero value does nothing.
type progress struct{ bar *progressbar.ProgressBar }

func newProgress(mode string, w io.Writer, dryRun bool) *progress {
	if mode == "never" || (mode == "auto" && !isTerminal(w)) {
		return &progress{}
	}
	desc := "re-encrypting"
	if dryRun {
		desc = "listing"
	}
	return &progress{bar: progressbar.NewOptions64(0,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("obj"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)}
}

func (p *progress) grow(_ string, estimate int64) {
	if p.bar != nil && estimate > 0 {
		p.bar.ChangeMax64(p.bar.GetMax64() + estimate)
	}
}

func (p *progress) step(string, reencrypt.Outcome) {
	if p.bar != nil {
		_ = p.bar.Add(1)
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

func printSummary(w io.Writer, format string, s reencrypt.Summary) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s); err != nil {
			return fmt.Errorf("write summary: %w", err)
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "RESOURCE\tLISTED\tREWRITTEN\tCURRENT\tDELETED\tFAILED\tNOT ATTEMPTED\t")
	row := func(name string, c reencrypt.Counts) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t\n", name, c.Listed, c.Rewritten, c.Current, c.Deleted, c.Failed, c.NotAttempted)
	}
	for _, r := range s.Resources {
		row(r.Resource, r.Counts)
	}
	if len(s.Resources) > 1 {
		row("total", s.Total)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	mode := string(s.Strategy)
	if s.DryRun {
		mode += ", dry run"
	}
	fmt.Fprintf(w, "strategy %s; %.1fs, %.0f objects/s, %d retries, %d conflicts\n", mode, s.DurationSeconds, s.ObjectsPerSecond, s.Retries, s.Conflicts)
	if p := s.Pace; p != nil {
		fmt.Fprintf(w, "pace: %s; %d in flight at the end (peak %d of --concurrency %d), latency %.1f ms at %d in flight, %d slowdowns, %d throttled, %d 429s retried; --max-speed runs %d at once\n",
			orAdaptive(p.Mode), p.Limit, p.Peak, p.Max, p.BaselineMs, p.BaselineLimit, p.Decreases, p.Throttled, p.TooManyRequests, p.Max)
	}
	if !s.Complete {
		fmt.Fprintf(w, "incomplete: %s (%d objects not attempted; run again to finish: rewritten objects come back current)\n", orUnknownReason(s.StopReason), s.Total.NotAttempted)
	}
	for _, x := range s.Failures {
		fmt.Fprintf(w, "failed: %s %s/%s: %s\n", x.Resource, x.Namespace, x.Name, x.Reason)
	}
	if s.FailuresOmitted > 0 {
		fmt.Fprintf(w, "... and %d more failures\n", s.FailuresOmitted)
	}
	return nil
}

// orAdaptive names a pace without a mode (a summary from before modes) "adaptive".
func orAdaptive(mode string) string {
	if mode == "" {
		return "adaptive"
	}
	return mode
}

func orUnknownReason(r string) string {
	if r == "" {
		return "the run stopped early"
	}
	return r
}
