package bench

import (
	"fmt"
	"strings"
)

// Issue 9's targets, judged from one run's figures (never timed tests: the bench prints them).
const (
	targetVsRaw       = 0.95 // (c) at least 95% of the raw client (e)
	targetVsReplace   = 4.0  // (c) at least 4x the kubectl replace pipeline (a)
	targetVsAnnotateK = 6.0  // (c) at least 6x the kubectl annotate pipeline (b)
	targetRSSMiB      = 64.0 // rekey's peak RSS
	targetRSSFlat     = 1.25 // largest / smallest peak RSS of one rekey row across N: "flat"
	targetFunctions   = 0.10 // the functions' pass within 10% of (c)
	targetPolite      = 2.0  // a default run keeps the foreground p99 within 2x of idle
)

// target is one judged target at one N (N 0: across every N).
type target struct {
	N      int    `json:"n"`
	Target string `json:"target"`
	Figure string `json:"figure"`
	Met    bool   `json:"met"`
}

// judge reads the targets off the KMS v2 rows. A target whose rows were not measured is left
// out, not passed.
func (r *report) judge() []target {
	var ts []target
	add := func(n int, name string, met bool, format string, args ...any) {
		ts = append(ts, target{N: n, Target: name, Figure: fmt.Sprintf(format, args...), Met: met})
	}
	rekeyRows := []string{rowMaxSpeed, rowRewrite, rowConverged, rowAnnotate}
	for _, n := range r.Ns {
		e := r.find(n, rowRaw, encKMS)
		a := r.find(n, rowReplace, encKMS)
		b := r.find(n, rowAnnotateK, encKMS)
		for _, id := range []string{rowMaxSpeed, rowRewrite} {
			c := r.find(n, id, encKMS)
			if c == nil {
				continue
			}
			if e != nil && e.ObjectsPerSecond > 0 {
				got, each := paired(c.ObjectsPerSecond, c.Rounds, e.ObjectsPerSecond, e.Rounds)
				add(n, fmt.Sprintf("(%s) >= %.0f%% of (e)", id, targetVsRaw*100), got >= targetVsRaw,
					"%s", rateFigure(c.ObjectsPerSecond, e.ObjectsPerSecond, got, each))
			}
			ceiling := func(base *row) string {
				if e == nil || base.ObjectsPerSecond <= 0 {
					return ""
				}
				return fmt.Sprintf(" (the ceiling (e) itself: %.2fx)", e.ObjectsPerSecond/base.ObjectsPerSecond)
			}
			if a != nil && a.ObjectsPerSecond > 0 {
				got := c.ObjectsPerSecond / a.ObjectsPerSecond
				add(n, fmt.Sprintf("(%s) >= %.0fx (a)", id, targetVsReplace), got >= targetVsReplace, "%.2fx%s", got, ceiling(a))
			}
			if b != nil && b.ObjectsPerSecond > 0 {
				got := c.ObjectsPerSecond / b.ObjectsPerSecond
				add(n, fmt.Sprintf("(%s) >= %.0fx (b)", id, targetVsAnnotateK), got >= targetVsAnnotateK, "%.2fx%s", got, ceiling(b))
			}
		}
		idle := r.Idle[n].P99ms
		for _, id := range []string{rowRewrite, rowConverged, rowAnnotate} {
			x := r.find(n, id, encKMS)
			if x == nil || idle <= 0 || x.Foreground.Samples == 0 {
				continue
			}
			got := x.Foreground.P99ms / idle
			add(n, fmt.Sprintf("(%s) default run: foreground p99 <= %.0fx idle", id, targetPolite), got <= targetPolite,
				"%.2f ms vs idle %.2f ms = %.1fx", x.Foreground.P99ms, idle, got)
		}
		var worst float64
		var worstID string
		for _, id := range rekeyRows {
			if x := r.find(n, id, encKMS); x != nil && float64(x.PeakRSSKiB)/1024 > worst {
				worst, worstID = float64(x.PeakRSSKiB)/1024, id
			}
		}
		if worstID != "" {
			add(n, fmt.Sprintf("rekey peak RSS <= %.0f MiB", targetRSSMiB), worst <= targetRSSMiB, "%.1f MiB (%s)", worst, worstID)
		}
		c, f := r.find(n, rowRewrite, encKMS), r.find(n, rowConverged, encKMS)
		if c != nil && f != nil {
			add(n, "(f) writes 0 and runs >= (c)", f.Written == 0 && f.ObjectsPerSecond >= c.ObjectsPerSecond,
				"written %d; %.0f vs %.0f obj/s", f.Written, f.ObjectsPerSecond, c.ObjectsPerSecond)
		}
		var perRotation []string
		perRow := int64(0)
		for _, id := range append(rekeyRows, rowFunctions) {
			if x := r.find(n, id, encKMS); x != nil {
				perRow += x.KMSEncrypt
				if id != rowConverged {
					perRotation = append(perRotation, fmt.Sprint(x.RotationKMSEncrypt))
				}
			}
		}
		if len(perRotation) > 0 {
			same := perRow == 0
			for _, p := range perRotation {
				same = same && p == perRotation[0]
			}
			add(n, "KMS Encrypt per rotation, none per object", same,
				"per rotation: %s; during rekey's rows: %d", strings.Join(perRotation, ", "), perRow)
		}
		if g, cm := r.find(n, rowFunctions, encKMS), r.find(n, rowMaxSpeed, encKMS); g != nil && cm != nil && g.PassObjectsPerSecond > 0 {
			got, each := paired(g.PassObjectsPerSecond, g.PassRounds, cm.ObjectsPerSecond, cm.Rounds)
			add(n, fmt.Sprintf("(g) pass within %.0f%% of (c-max)", targetFunctions*100), got >= 1-targetFunctions,
				"%s; whole job with its convergence pass and verifier %.0f obj/s",
				rateFigure(g.PassObjectsPerSecond, cm.ObjectsPerSecond, got, each), g.ObjectsPerSecond)
		}
	}
	for _, id := range []string{rowMaxSpeed, rowRewrite} {
		lo, hi := 0.0, 0.0
		var seen []string
		for _, n := range r.Ns {
			x := r.find(n, id, encKMS)
			if x == nil || x.PeakRSSKiB == 0 {
				continue
			}
			v := float64(x.PeakRSSKiB) / 1024
			if lo == 0 || v < lo {
				lo = v
			}
			hi = max(hi, v)
			seen = append(seen, fmt.Sprintf("%.1f at %d", v, n))
		}
		if len(seen) > 1 {
			add(0, fmt.Sprintf("(%s) peak RSS flat in N (largest <= %.2fx smallest)", id, targetRSSFlat), hi <= lo*targetRSSFlat,
				"%s MiB", strings.Join(seen, ", "))
		}
	}
	return ts
}

// rateFigure words a rate ratio: x vs y = got, or, when got is the median of the rounds' ratios
// each, those ratios and the median rates.
func rateFigure(x, y, got float64, each []float64) string {
	if len(each) == 0 {
		return fmt.Sprintf("%.0f vs %.0f obj/s = %.3fx", x, y, got)
	}
	var s []string
	for _, r := range each {
		s = append(s, fmt.Sprintf("%.2fx", r))
	}
	return fmt.Sprintf("%.3fx, the median of the rounds' ratios %s (median rates %.0f vs %.0f obj/s)", got, strings.Join(s, ", "), x, y)
}

// targetsMarkdown renders the judged targets as a table.
func targetsMarkdown(ts []target) string {
	if len(ts) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("## Targets (issue 9), judged from this run\n\n| N | target | figure | met |\n|---|---|---|---|\n")
	for _, t := range ts {
		n := "all"
		if t.N != 0 {
			n = fmt.Sprint(t.N)
		}
		met := "no"
		if t.Met {
			met = "yes"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", n, t.Target, t.Figure, met)
	}
	b.WriteString("\n")
	return b.String()
}
