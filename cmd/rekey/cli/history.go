package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rekey-dev/rekey/shared/evidence"
)

const historyLong = `history prints the evidence records kept in each target cluster (namespace rekey-system, the
last 100 per cluster): one per job outcome (done, suspicious, failed, refused, and partial when it
ended an off-peak window), with the versions before and after, what triggered the job, its
timeline, the adoption evidence, the counts, the API server replicas covered, every verifier layer
and the retirement verdict.

  -o markdown   a report a person can read and sign (default)
  -o csv        one row per record, for spreadsheets
  -o json       the records as stored

Targets, kubeconfigs and credentials are read as for status. --since and --until take a time
(RFC 3339, e.g. 2026-12-01T00:00:00Z) or a duration back from now (72h). A cluster whose records
cannot be read is named in the report and on stderr, and the exit status is 1.`

type historyFlags struct {
	fleet        fleetFlags
	since, until string
	key          string
	output       string
}

func newHistoryCommand(stdout, stderr io.Writer) *cobra.Command {
	f := &historyFlags{}
	cmd := &cobra.Command{
		Use:   "history",
		Short: "Print the rotation evidence records of one or more clusters (for auditors)",
		Long:  historyLong,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now()
			since, err := parseWhen(f.since, now)
			if err != nil {
				return usagef("--since: %v", err)
			}
			until, err := parseWhen(f.until, now)
			if err != nil {
				return usagef("--until: %v", err)
			}
			switch f.output {
			case "markdown", "md", "csv", "json":
			default:
				return usagef("-o %q: want markdown, csv or json", f.output)
			}
			fl, err := f.fleet.load()
			if err != nil {
				return err
			}
			var (
				records []evidence.Record
				unread  []string
			)
			for _, c := range fl.clusters() {
				rs, err := readRecords(cmd, fl, c)
				if err != nil {
					unread = append(unread, fmt.Sprintf("%s: %v", c, err))
					fmt.Fprintf(stderr, "rekey: history: cluster %s: %v\n", c, err)
					continue
				}
				for _, r := range rs {
					if keep(r, since, until, f.key) {
						records = append(records, r)
					}
				}
			}
			evidence.SortByEnd(records)
			if err := writeHistory(stdout, f, fl.clusters(), records, unread, now); err != nil {
				return err
			}
			if len(unread) > 0 {
				return &exitError{code: ExitFailed}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	f.fleet.register(fs)
	fs.StringVar(&f.since, "since", "", "only records of jobs that ended at or after this (RFC 3339 time or a duration back, e.g. 720h)")
	fs.StringVar(&f.until, "until", "", "only records of jobs that ended at or before this")
	fs.StringVar(&f.key, "key", "", "only records of this key (as configured, its key ID or its alias)")
	fs.StringVarP(&f.output, "output", "o", "markdown", "markdown, csv or json")
	return cmd
}

func readRecords(cmd *cobra.Command, fl *fleet, cluster string) ([]evidence.Record, error) {
	ctx := cmd.Context()
	if fl.clusterTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, fl.clusterTimeout)
		defer cancel()
	}
	st, err := fl.open(ctx, cluster)
	if err != nil {
		return nil, err
	}
	stored, err := st.Evidence(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]evidence.Record, 0, len(stored))
	for _, s := range stored {
		var r evidence.Record
		if err := json.Unmarshal(s.Body, &r); err != nil {
			return nil, fmt.Errorf("evidence record %s is not readable: %w", s.ID, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func keep(r evidence.Record, since, until time.Time, key string) bool {
	if !since.IsZero() && r.EndedAt.Before(since) {
		return false
	}
	if !until.IsZero() && r.EndedAt.After(until) {
		return false
	}
	return key == "" || r.Key == key || r.KeyID == key || r.Alias == key
}

func writeHistory(w io.Writer, f *historyFlags, clusters []string, records []evidence.Record, unread []string, now time.Time) error {
	switch f.output {
	case "csv":
		return evidence.WriteCSV(w, records)
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if records == nil {
			records = []evidence.Record{}
		}
		if err := enc.Encode(records); err != nil {
			return fmt.Errorf("write history: %w", err)
		}
		return nil
	}
	filter := "clusters " + strings.Join(clusters, ", ")
	if f.key != "" {
		filter += "; key " + f.key
	}
	if f.since != "" {
		filter += "; since " + f.since
	}
	if f.until != "" {
		filter += "; until " + f.until
	}
	return evidence.WriteMarkdown(w, records, evidence.MarkdownOptions{Generated: now, Filter: filter, Unread: unread})
}

// parseWhen reads an RFC 3339 time or a duration back from now ("" is the zero time).
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a positive duration", s)
	}
	return now.Add(-d), nil
}
