package status

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"
)

// Human formats a duration the way kubectl shows ages (3d, 5h10m, 47s).
func Human(d time.Duration) string { return duration.HumanDuration(d) }

// WriteTable writes the report as a kubectl-like table, one row per target, then the problems of
// the unhealthy rows, one per line.
func WriteTable(w io.Writer, rep Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tKEY\tKEY STATE\tPRIMARY\tVERIFIED\tBEHIND\tPENDING\tLAST OUTCOME\tRUNNING\tHEALTHY")
	for _, r := range rep.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Cluster, r.Key, dash(r.KeyState), dash(r.Primary), verified(r),
			behind(r, rep.CheckedAt), pending(r), last(r, rep.CheckedAt), running(r), healthy(r))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write status table: %w", err)
	}
	var b strings.Builder
	for _, r := range rep.Rows {
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "%s %s: %s\n", r.Cluster, r.Key, p)
		}
	}
	if b.Len() > 0 {
		if _, err := io.WriteString(w, "\n"+b.String()); err != nil {
			return fmt.Errorf("write status problems: %w", err)
		}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func verified(r Row) string {
	if r.Unreachable {
		return "<unreachable>"
	}
	return dash(r.Verified)
}

func behind(r Row, now time.Time) string {
	switch {
	case r.Unreachable:
		return "?"
	case !r.Behind:
		if r.Primary == "" {
			return "-"
		}
		return "no"
	case r.BehindSince.IsZero():
		return "yes (since ?)"
	default:
		return Human(now.Sub(r.BehindSince))
	}
}

func pending(r Row) string {
	if r.Unreachable {
		return "?"
	}
	if len(r.Pending) == 0 {
		return "0"
	}
	return strconv.Itoa(len(r.Pending)) + " (next " + r.Pending[0].NotBefore.UTC().Format("2006-01-02 15:04Z") + ")"
}

func last(r Row, now time.Time) string {
	if r.LastOutcome == nil {
		return "-"
	}
	return r.LastOutcome.Status + " " + Human(now.Sub(r.LastOutcome.At)) + " ago"
}

func running(r Row) string {
	if r.Running == nil {
		return "-"
	}
	return r.Running.Holder
}

func healthy(r Row) string {
	if r.Healthy {
		return "yes"
	}
	return "NO"
}
