package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/twin"
	"github.com/rekey-dev/rekey/shared/apf"
)

// Knobs of the politeness bench (make bench-politeness).
const (
	envPoliteN      = "REKEY_BENCH_POLITE_N"      // Secrets (default 10000)
	envPoliteIdle   = "REKEY_BENCH_POLITE_IDLE"   // idle foreground sampling (default 60s)
	envPoliteRounds = "REKEY_BENCH_POLITE_ROUNDS" // rounds of the three rows (default 2)
	envPoliteSweep  = "REKEY_BENCH_POLITE_SWEEP"  // fixed concurrencies measured once after the rounds (default 1,4,8,16; "none")
)

// The politeness bench's identities: rekey's CLI user (bound by infra/rbac/rekey.yaml, classified
// by infra/apf) and a foreground client that is neither rekey nor exempt (the built-in
// global-default FlowSchema and priority level).
const (
	politeUser     = "rekey"
	foregroundUser = "foreground"
	politeFG       = 20 * time.Millisecond
)

// Row IDs of the politeness bench.
const (
	politeMax   = "max-speed"
	politeAPF   = "default, FlowSchema"
	politeNoAPF = "default, no FlowSchema"
	politeCap   = "default, FlowSchema, unlimited borrowing"
)

// unlimitedShares is the nominal share of rekey's priority level in the row that may borrow
// without limit (not shipped: it shows why infra/apf bounds the borrowing): ceil(600 x 10 / 255) =
// 24 seats per replica, and every seat other levels lend.
const unlimitedShares = 10

// politeRow is one measured row.
type politeRow struct {
	Round            int             `json:"round"`
	ID               string          `json:"id"`
	Objects          int64           `json:"objects"`
	Seconds          float64         `json:"seconds"`
	ObjectsPerSecond float64         `json:"objectsPerSecond"`
	Foreground       foregroundStats `json:"foreground"`
	// Note is rekey's summary of the run (its pace included).
	Note string `json:"note,omitempty"`
}

// politeReport is the politeness bench's result.
type politeReport struct {
	Date     string          `json:"date"`
	Cores    int             `json:"cores"`
	N        int             `json:"n"`
	Replicas int             `json:"replicas"`
	Idle     foregroundStats `json:"idle"`
	Rows     []politeRow     `json:"rows"`
	// Sweep is --max-speed at fixed concurrencies, measured once after the rounds.
	Sweep []politeRow `json:"sweep,omitempty"`
	// Ratios per round: the default's objects/s over --max-speed's, with and without the FlowSchema.
	APFRatio, NoAPFRatio, CapRatio []float64
	Targets                        []string `json:"targets"`
}

// BenchmarkPoliteness measures rekey's politeness on the ACK-shaped twin (two kube-apiserver
// replicas behind a pinning load balancer, KMS v2): rekey run as its own user with --max-speed,
// with its default pacing under rekey's FlowSchema (infra/apf), and with the default pacing after
// the FlowSchema is deleted, while a foreground client in another priority level GETs a Secret
// every 20 ms. The key is rotated before every row; etcd is scanned after it. It prints the rows,
// the foreground's p50/p99 with their sample counts, the ratios to --max-speed within each round
// and the targets, and writes results/politeness.md and politeness.json.
func BenchmarkPoliteness(b *testing.B) {
	if *rekeyBin == "" {
		b.Fatal("-rekey is required (run make bench-politeness)")
	}
	n, idle, rounds, sweep := 10000, 60*time.Second, 2, []int{1, 4, 8, 16}
	if s := os.Getenv(envPoliteN); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 100 || v > 99999 {
			b.Fatalf("%s=%q: want 100 to 99999 Secrets", envPoliteN, s)
		}
		n = v
	}
	if s := os.Getenv(envPoliteIdle); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Second {
			b.Fatalf("%s=%q: want a duration of at least 1s", envPoliteIdle, s)
		}
		idle = d
	}
	if s := os.Getenv(envPoliteRounds); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 9 {
			b.Fatalf("%s=%q: want 1 to 9 rounds", envPoliteRounds, s)
		}
		rounds = v
	}
	if s := os.Getenv(envPoliteSweep); s == "none" {
		sweep = nil
	} else if s != "" {
		sweep = nil
		for _, f := range strings.Split(s, ",") {
			v, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || v < 1 || v > 256 {
				b.Fatalf("%s=%q: want concurrencies from 1 to 256, or none", envPoliteSweep, s)
			}
			sweep = append(sweep, v)
		}
	}
	out := "results"
	if s := os.Getenv(envOut); s != "" {
		out = s
	}
	for range b.N {
		h := startPolite(b)
		rep := &politeReport{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Cores: h.rep.Cores, N: n, Replicas: 2}
		h.seed(n)
		fg := startForeground(h.fgClient, nsName(0), "secret-00000", politeFG)
		time.Sleep(idle)
		rep.Idle = fg.stop()
		b.Logf("idle foreground: %+v", rep.Idle)
		for round := range rounds {
			rows := map[string]politeRow{}
			for _, id := range []string{politeMax, politeAPF, politeNoAPF, politeCap} {
				switch id {
				case politeNoAPF:
					h.setFlowSchema(false)
				case politeCap:
					h.capLevel(true)
				}
				r := h.politeRow(round, id)
				switch id {
				case politeNoAPF:
					h.setFlowSchema(true)
				case politeCap:
					h.capLevel(false)
				}
				rows[id] = r
				rep.Rows = append(rep.Rows, r)
			}
			rep.APFRatio = append(rep.APFRatio, rows[politeAPF].ObjectsPerSecond/rows[politeMax].ObjectsPerSecond)
			rep.NoAPFRatio = append(rep.NoAPFRatio, rows[politeNoAPF].ObjectsPerSecond/rows[politeMax].ObjectsPerSecond)
			rep.CapRatio = append(rep.CapRatio, rows[politeCap].ObjectsPerSecond/rows[politeMax].ObjectsPerSecond)
		}
		// Where the throughput's knee is and what each concurrency costs the foreground: --max-speed
		// at fixed --concurrency values, after the rounds.
		for _, c := range sweep {
			rep.Sweep = append(rep.Sweep, h.politeRow(rounds, fmt.Sprintf("%s --concurrency %d", politeMax, c)))
		}
		rep.judge()
		md := rep.markdown()
		fmt.Print("\n" + md)
		if err := os.MkdirAll(out, 0o755); err != nil {
			b.Fatal(err)
		}
		js, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, "politeness.json"), append(js, '\n'), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, "politeness.md"), []byte(md), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// startPolite starts the ACK-shaped twin with rekey's APF objects, rekey's CLI user bound by
// infra/rbac/rekey.yaml, and the foreground user allowed to read the Secrets of one namespace. The
// harness's kubeconfig (h.kc, through the counting proxy) is rekey's user's.
func startPolite(b *testing.B) *harness {
	h := &harness{b: b, ctx: context.Background(), dir: b.TempDir(), rep: &report{}}
	h.rep.Cores = runtime.NumCPU()
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Minute)
	defer cancel()
	tw, err := twin.Start(ctx, twin.Options{Repo: "../..", AdoptSpread: -1,
		Users: []controlplane.User{{Name: politeUser}, {Name: foregroundUser}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := tw.Stop(); err != nil {
			b.Error(err)
		}
	})
	h.tw = tw
	tw.MuteEvents(true)
	if h.admin, err = tw.AdminClient(); err != nil {
		b.Fatal(err)
	}
	if err := twin.ApplyRBAC(ctx, h.admin, "../../infra/rbac/rekey.yaml", ""); err != nil {
		b.Fatal(err)
	}
	h.proxyAs(politeUser)
	fgKC := filepath.Join(h.dir, "foreground.kubeconfig")
	if err := h.writeKubeconfig(foregroundUser, fgKC); err != nil {
		b.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", fgKC)
	if err != nil {
		b.Fatal(err)
	}
	cfg.QPS, cfg.Burst = -1, 0
	if h.fgClient, err = kubernetes.NewForConfig(cfg); err != nil {
		b.Fatal(err)
	}
	h.seed(0) // the namespaces, so that the foreground's Role has one to live in
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: foregroundUser, Namespace: nsName(0)},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}}}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: foregroundUser, Namespace: nsName(0)},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: foregroundUser},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: foregroundUser}}}
	if _, err := h.admin.RbacV1().Roles(nsName(0)).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := h.admin.RbacV1().RoleBindings(nsName(0)).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if h.version, err = tw.KMS.PrimaryVersion(h.ctx); err != nil {
		b.Fatal(err)
	}
	h.current = h.underKMS(h.version)
	return h
}

// setFlowSchema deletes rekey's FlowSchema (on false) or creates it again from infra/apf (on true).
func (h *harness) setFlowSchema(on bool) {
	h.b.Helper()
	if on {
		if err := twin.ApplyRBAC(h.ctx, h.admin, "../../"+apf.File, twin.FunctionRoleID); err != nil {
			h.b.Fatal(err)
		}
		return
	}
	err := h.admin.FlowcontrolV1().FlowSchemas().Delete(h.ctx, apf.FlowSchemaName, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		h.b.Fatal(err)
	}
}

// capLevel sets rekey's priority level to unlimitedShares with unlimited borrowing (on true), or
// back to the shipped spec (on false), and gives the API server's APF controller a moment to apply
// it.
func (h *harness) capLevel(on bool) {
	h.b.Helper()
	pl, err := h.admin.FlowcontrolV1().PriorityLevelConfigurations().Get(h.ctx, apf.FlowSchemaName, metav1.GetOptions{})
	if err != nil {
		h.b.Fatal(err)
	}
	if on {
		h.plSpec = pl.Spec.DeepCopy()
		shares := int32(unlimitedShares)
		pl.Spec.Limited.NominalConcurrencyShares = &shares
		pl.Spec.Limited.BorrowingLimitPercent = nil
	} else {
		pl.Spec = *h.plSpec
	}
	if _, err := h.admin.FlowcontrolV1().PriorityLevelConfigurations().Update(h.ctx, pl, metav1.UpdateOptions{}); err != nil {
		h.b.Fatal(err)
	}
	time.Sleep(5 * time.Second)
}

// politeRow rotates the key, runs one row with the foreground client sampling, and checks etcd.
func (h *harness) politeRow(round int, id string) politeRow {
	h.b.Helper()
	h.rotateKMS(false)
	_, stale := h.scan()
	args := []string{"--strategy", "rewrite"}
	if base, conc, ok := strings.Cut(id, " --concurrency "); base == politeMax {
		args = append(args, "--max-speed")
		if ok {
			args = append(args, "--concurrency", conc)
		}
	}
	// The classification a paced run will see, before it starts: APF picks a new or deleted
	// FlowSchema up asynchronously.
	if id == politeAPF || id == politeNoAPF || id == politeCap {
		h.waitClassified(id != politeNoAPF)
	}
	fg := startForeground(h.fgClient, nsName(0), "secret-00000", politeFG)
	t0 := time.Now()
	c, err := h.rekey(false, args...)
	wall := time.Since(t0)
	fgs := fg.stop()
	if err != nil {
		h.b.Fatalf("%s: %v", id, err)
	}
	if _, left := h.scan(); left != 0 {
		h.b.Fatalf("%s left %d of %d Secrets stale", id, left, stale)
	}
	r := politeRow{Round: round, ID: id, Objects: stale, Seconds: wall.Seconds(), ObjectsPerSecond: float64(stale) / wall.Seconds(), Foreground: fgs, Note: c.note}
	h.b.Logf("round %d %-24s %6d objects %7.2fs %6.0f obj/s  fg p50 %.2fms p99 %.2fms (%d samples, %d errors)  %s", round, id, stale, r.Seconds,
		r.ObjectsPerSecond, fgs.P50ms, fgs.P99ms, fgs.Samples, fgs.Errors, c.note)
	return r
}

// waitClassified waits until rekey's user is (ours) or is not classified by rekey's FlowSchema.
func (h *harness) waitClassified(ours bool) {
	h.b.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", h.kc)
	if err != nil {
		h.b.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := apf.Probe(h.ctx, cfg)
		if err == nil && c.Ours == ours {
			return
		}
		if time.Now().After(deadline) {
			h.b.Fatalf("rekey's user: classification %+v (%v), want ours=%v", c, err, ours)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// judge states the targets against the ratios of each round (their median).
func (r *politeReport) judge() {
	apfR, noR, capR := medianOf(r.APFRatio), medianOf(r.NoAPFRatio), medianOf(r.CapRatio)
	p99s := map[string][]float64{}
	for _, row := range r.Rows {
		p99s[row.ID] = append(p99s[row.ID], row.Foreground.P99ms)
	}
	p99, capP99 := medianOf(p99s[politeAPF]), medianOf(p99s[politeCap])
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	r.Targets = []string{
		fmt.Sprintf("default with the FlowSchema >= 70%% of --max-speed: %.2fx (median of %d rounds) — %s", apfR, len(r.APFRatio), verdict(apfR >= 0.70)),
		fmt.Sprintf("its foreground p99 within 2x idle: %.2f ms vs idle %.2f ms = %.2fx — %s", p99, r.Idle.P99ms, p99/r.Idle.P99ms, verdict(p99 <= 2*r.Idle.P99ms)),
		fmt.Sprintf("default without the FlowSchema >= 50%% of --max-speed: %.2fx — %s", noR, verdict(noR >= 0.50)),
		fmt.Sprintf("(not a target) rekey's level at %d shares with unlimited borrowing (not shipped): %.2fx of --max-speed, foreground p99 %.2f ms = %.2fx idle",
			unlimitedShares, capR, capP99, capP99/r.Idle.P99ms),
	}
}

// medianOf is the median of v (the mean of the middle two for an even count; 0 for none).
func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func (r *politeReport) markdown() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "# Politeness (%s, %d cores): %d Secrets, %d kube-apiserver replicas behind a pinning load balancer, KMS v2\n\n", r.Date, r.Cores, r.N, r.Replicas)
	fmt.Fprintf(&sb, "Foreground: user %q (priority level global-default) GETs one Secret every %s. Idle: p50 %.2f ms, p99 %.2f ms over %d samples (%d errors).\n\n",
		foregroundUser, politeFG, r.Idle.P50ms, r.Idle.P99ms, r.Idle.Samples, r.Idle.Errors)
	fmt.Fprintf(&sb, "Rows: rekey run as user %q after a fresh rotation each: --max-speed (64 in flight, within rekey's priority level); the default with rekey's FlowSchema and priority level "+
		"as shipped (infra/apf: 1 share, borrowing up to 100%%); the default after the FlowSchema is deleted (bounded fallback); the default with rekey's level "+
		"at %d shares and unlimited borrowing (not shipped).\n\n", politeUser, unlimitedShares)
	sb.WriteString("| round | row | objects | s | obj/s | vs --max-speed | fg p50 ms | fg p99 ms | fg p99 / idle | fg samples | fg errors | rekey's summary |\n")
	sb.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	maxRate := map[int]float64{}
	for _, row := range r.Rows {
		if row.ID == politeMax {
			maxRate[row.Round] = row.ObjectsPerSecond
		}
	}
	for _, row := range r.Rows {
		fmt.Fprintf(&sb, "| %d | %s | %d | %.1f | %.0f | %.2fx | %.2f | %.2f | %.2fx | %d | %d | %s |\n", row.Round, row.ID, row.Objects, row.Seconds,
			row.ObjectsPerSecond, row.ObjectsPerSecond/maxRate[row.Round], row.Foreground.P50ms, row.Foreground.P99ms,
			row.Foreground.P99ms/r.Idle.P99ms, row.Foreground.Samples, row.Foreground.Errors, row.Note)
	}
	if len(r.Sweep) > 0 {
		sb.WriteString("\nThe knee: --max-speed at fixed concurrencies (one run each, after the rounds; ratios to the last round's --max-speed at 64):\n\n")
		sb.WriteString("| row | obj/s | vs --max-speed | fg p50 ms | fg p99 ms | fg p99 / idle | fg samples |\n|---|---:|---:|---:|---:|---:|---:|\n")
		for _, row := range r.Sweep {
			fmt.Fprintf(&sb, "| %s | %.0f | %.2fx | %.2f | %.2f | %.2fx | %d |\n", row.ID, row.ObjectsPerSecond, row.ObjectsPerSecond/maxRate[row.Round-1],
				row.Foreground.P50ms, row.Foreground.P99ms, row.Foreground.P99ms/r.Idle.P99ms, row.Foreground.Samples)
		}
	}
	sb.WriteString("\nTargets (issue 18; ratios within each round, median over rounds):\n\n")
	for _, t := range r.Targets {
		sb.WriteString("- " + t + "\n")
	}
	return sb.String()
}
