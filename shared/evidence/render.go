package evidence

import (
	"encoding/csv"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// CSVHeader names the columns WriteCSV writes, in order.
var CSVHeader = []string{
	"record", "cluster", "job", "key", "keyId", "alias", "fromVersions", "toVersion", "status", "reason",
	"triggerKind", "triggerName", "triggerEventId", "triggerActor", "triggerTime",
	"startedAt", "endedAt", "durationSeconds", "timeToAdoptionSeconds", "adoption", "adoptionDirect", "strategy",
	"listed", "rewritten", "current", "deleted", "failed", "notAttempted",
	"replicasCovered", "expectedReplicas", "verdict", "layers", "retirement", "trailEventIds", "rekeyVersion",
}

// WriteCSV writes records as CSV with a header row (CSVHeader): one row per record, lists joined
// with ";", times in RFC 3339 UTC. The counts are the convergence pass's (the pass's when no
// convergence ran).
func WriteCSV(w io.Writer, records []Record) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return fmt.Errorf("write csv header: %w", err)
	}
	for _, r := range records {
		c := r.Counts()
		adoption, direct := "", ""
		if r.Adoption != nil {
			adoption, direct = r.Adoption.Kind, strconv.FormatBool(r.Adoption.Direct)
		}
		strategy := ""
		if r.Strategy != nil {
			strategy = r.Strategy.Name
		}
		layers := make([]string, 0, len(r.Layers))
		for _, l := range r.Layers {
			layers = append(layers, l.Name+"="+l.Status)
		}
		row := []string{
			r.ID, r.Cluster, r.Job, r.Key, r.KeyID, r.Alias, strings.Join(r.FromVersions, ";"), r.ToVersion, r.Status, r.Reason,
			r.Trigger.Kind, r.Trigger.Name, r.Trigger.RecordID, r.Trigger.Actor, csvTime(r.Trigger.Time),
			csvTime(r.StartedAt), csvTime(r.EndedAt), seconds(r.Duration().Seconds()), seconds(r.TimeToAdoptionSeconds), adoption, direct, strategy,
			itoa(c.Listed), itoa(c.Rewritten), itoa(c.Current), itoa(c.Deleted), itoa(c.Failed), itoa(c.NotAttempted),
			strings.Join(r.Replicas, ";"), strconv.Itoa(r.ExpectedReplicas), r.Verdict, strings.Join(layers, ";"), r.Retirement.Verdict,
			strings.Join(r.TrailEventIDs, ";"), r.RekeyVersion,
		}
		if err := cw.Write(row); err != nil {
			return fmt.Errorf("write csv row of record %s: %w", r.ID, err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	return nil
}

func csvTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func seconds(s float64) string { return strconv.FormatFloat(s, 'f', 0, 64) }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// MarkdownOptions shape the Markdown report.
type MarkdownOptions struct {
	// Generated is when the report was made (shown in its header).
	Generated time.Time
	// Filter describes how the records were chosen (clusters, period, key), in words.
	Filter string
	// Unread lists the clusters whose records could not be read, with why: the report says it is
	// incomplete.
	Unread []string
}

// WriteMarkdown writes records as a report a person can read and sign: a summary table, then one
// section per record (trigger, timeline, adoption, strategy, counts, replicas, verifier layers,
// retirement), then a sign-off block.
func WriteMarkdown(w io.Writer, records []Record, o MarkdownOptions) error {
	var b strings.Builder
	b.WriteString("# Kubernetes Secret re-encryption: rotation evidence\n\n")
	fmt.Fprintf(&b, "Generated %s by rekey from the evidence records kept in each cluster (namespace rekey-system).  \n", mdTime(o.Generated))
	if o.Filter != "" {
		fmt.Fprintf(&b, "Records: %s.  \n", md(o.Filter))
	}
	fmt.Fprintf(&b, "%d record(s).\n\n", len(records))
	if len(o.Unread) > 0 {
		b.WriteString("**This report is incomplete.** The records of these clusters could not be read:\n\n")
		for _, u := range o.Unread {
			fmt.Fprintf(&b, "- %s\n", md(u))
		}
		b.WriteString("\n")
	}
	if len(records) == 0 {
		b.WriteString("No evidence record matches.\n")
		_, err := io.WriteString(w, b.String())
		return wrapWrite(err)
	}
	b.WriteString("## Summary\n\n")
	b.WriteString("| Ended (UTC) | Cluster | Key | Versions | Status | Verifier | Rewritten / listed | Record |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, r := range records {
		c := r.Counts()
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %d / %d | %s |\n", mdTime(r.EndedAt), md(r.Cluster), md(r.Key),
			md(versions(r)), md(r.Status), md(orDash(r.Verdict)), r.Pass.Rewritten, c.Listed, md(r.ID))
	}
	for _, r := range records {
		writeRecord(&b, r)
	}
	b.WriteString("\n## Sign-off\n\n")
	b.WriteString("I have reviewed the records above.\n\n")
	b.WriteString("| Name | Role | Date | Signature |\n|---|---|---|---|\n|  |  |  |  |\n")
	_, err := io.WriteString(w, b.String())
	return wrapWrite(err)
}

func wrapWrite(err error) error {
	if err != nil {
		return fmt.Errorf("write markdown: %w", err)
	}
	return nil
}

func writeRecord(b *strings.Builder, r Record) {
	fmt.Fprintf(b, "\n## %s: %s, %s (%s)\n\n", md(r.Cluster), md(r.Key), md(versions(r)), md(r.Status))
	fmt.Fprintf(b, "- **Record** `%s`, job `%s`, written by rekey %s\n", r.ID, r.Job, md(r.RekeyVersion))
	key := md(r.Key)
	if r.KeyID != "" && r.KeyID != r.Key {
		key += " (key ID " + md(r.KeyID) + ")"
	}
	fmt.Fprintf(b, "- **Key** %s\n", key)
	fmt.Fprintf(b, "- **Outcome** %s: %s\n", md(r.Status), md(r.Reason))
	fmt.Fprintf(b, "- **Triggered by** %s\n", md(triggerText(r.Trigger)))
	fmt.Fprintf(b, "- **Ran** from %s to %s (%s)\n", mdTime(r.StartedAt), mdTime(r.EndedAt), r.Duration().Round(time.Second))
	if r.Adoption != nil {
		how := "direct evidence"
		if !r.Adoption.Direct {
			how = "a settle delay only (adoption likely, not proven)"
		}
		fmt.Fprintf(b, "- **Adoption** %s, %s: %s", md(r.Adoption.Kind), how, md(r.Adoption.Detail))
		if r.TimeToAdoptionSeconds > 0 {
			fmt.Fprintf(b, " (%s after the rotation)", (time.Duration(r.TimeToAdoptionSeconds) * time.Second).Round(time.Second))
		}
		b.WriteString("\n")
	}
	if r.Strategy != nil {
		fmt.Fprintf(b, "- **Strategy** %s (%s): %s\n", md(r.Strategy.Name), md(r.Strategy.Rule), md(r.Strategy.Reason))
	}
	if len(r.Replicas) > 0 || r.ExpectedReplicas > 0 {
		exp := "unknown"
		if r.ExpectedReplicas > 0 {
			exp = strconv.Itoa(r.ExpectedReplicas)
		}
		fmt.Fprintf(b, "- **API server replicas covered** %d of %s: %s\n", len(r.Replicas), exp, md(strings.Join(r.Replicas, ", ")))
	}
	if len(r.TrailEventIDs) > 0 {
		fmt.Fprintf(b, "- **ActionTrail events relied on** %s\n", md(strings.Join(r.TrailEventIDs, ", ")))
	}
	if len(r.Phases) > 0 {
		b.WriteString("\n| Phase | Started (UTC) | Ended (UTC) | Seconds |\n|---|---|---|---|\n")
		for _, p := range r.Phases {
			fmt.Fprintf(b, "| %s | %s | %s | %s |\n", md(p.Name), mdTime(p.StartedAt), mdTime(p.EndedAt), seconds(p.Seconds()))
		}
	}
	b.WriteString("\n| Pass | Listed | Rewritten | Current | Deleted | Failed | Not attempted |\n|---|---|---|---|---|---|---|\n")
	row := func(name string, c reencrypt.Counts) {
		fmt.Fprintf(b, "| %s | %d | %d | %d | %d | %d | %d |\n", name, c.Listed, c.Rewritten, c.Current, c.Deleted, c.Failed, c.NotAttempted)
	}
	row("re-encryption", r.Pass)
	if r.Convergence != nil {
		row("convergence", *r.Convergence)
	}
	if len(r.Layers) > 0 {
		fmt.Fprintf(b, "\n**Verifier: %s**\n\n| Layer | Verdict | Reasons |\n|---|---|---|\n", md(orDash(r.Verdict)))
		for _, l := range r.Layers {
			fmt.Fprintf(b, "| %s | %s | %s |\n", md(l.Name), md(l.Status), md(strings.Join(l.Reasons, "; ")))
		}
	} else {
		b.WriteString("\n**Verifier:** did not run.\n")
	}
	fmt.Fprintf(b, "\n**Retirement of the previous versions: %s.** %s\n", md(r.Retirement.Verdict), md(r.Retirement.Reason))
	fmt.Fprintf(b, "\n> %s\n", md(r.Retirement.Statement))
}

func triggerText(t Trigger) string {
	switch t.Kind {
	case TriggerEvent:
		s := orDash(t.Name)
		if t.Actor != "" {
			s += " by " + t.Actor
		}
		if !t.Time.IsZero() {
			s += " at " + mdTime(t.Time)
		}
		var ids []string
		if t.RecordID != "" {
			ids = append(ids, "ActionTrail event "+t.RecordID)
		}
		if t.EventID != "" {
			ids = append(ids, "EventBridge event "+t.Source+"/"+t.EventID)
		}
		if len(ids) > 0 {
			s += " (" + strings.Join(ids, ", ") + ")"
		}
		return s
	case TriggerTimer:
		return "the timer's version check: " + orDash(t.Reason)
	default:
		return orDash(t.Kind) + ": " + orDash(t.Reason)
	}
}

func versions(r Record) string {
	from := "?"
	if len(r.FromVersions) > 0 {
		from = strings.Join(r.FromVersions, ", ")
	}
	return from + " -> " + orDash(r.ToVersion)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func mdTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

// md makes s safe inside a Markdown table cell or list item: one line, pipes escaped.
func md(s string) string {
	s = strings.NewReplacer("\r", " ", "\n", " ", "|", `\|`).Replace(s)
	return s
}

// SortByEnd sorts records oldest first (by EndedAt, then ID).
func SortByEnd(records []Record) {
	slices.SortStableFunc(records, func(a, b Record) int {
		if c := a.EndedAt.Compare(b.EndedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}
