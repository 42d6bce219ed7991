package faults

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// EnvReport names the file the suite writes its Markdown table to, when set.
const EnvReport = "REKEY_FAULT_REPORT"

// row is one line of the report: fault -> what happened -> Secrets re-encrypted at the end ->
// lost updates -> time to recover.
type row struct {
	order       int
	fault       string
	happened    string
	reencrypted string
	lost        int
	recover     string
	failed      bool
}

// table collects the rows of the cases, which run in parallel.
type table struct {
	mu   sync.Mutex
	rows []row
}

func (tb *table) add(t *testing.T, r row) {
	r.failed = t.Failed()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.rows = append(tb.rows, r)
}

// markdown renders the rows in case order.
func (tb *table) markdown() string {
	tb.mu.Lock()
	rows := append([]row(nil), tb.rows...)
	tb.mu.Unlock()
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].order < rows[j].order })
	var b strings.Builder
	b.WriteString("| fault | what happened | Secrets re-encrypted at the end | lost updates | time to recover |\n")
	b.WriteString("|---|---|---|---|---|\n")
	for _, r := range rows {
		fault := r.fault
		if r.failed {
			fault += " **(case FAILED)**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %s |\n", cell(fault), cell(r.happened), cell(r.reencrypted), r.lost, cell(r.recover))
	}
	return b.String()
}

func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// publish logs the table and writes it to $REKEY_FAULT_REPORT when set.
func (tb *table) publish(t *testing.T) {
	md := tb.markdown()
	t.Logf("fault suite report:\n%s", md)
	path := os.Getenv(EnvReport)
	if path == "" {
		return
	}
	doc := fmt.Sprintf("# rekey fault-injection suite\n\n%s UTC, `go test ./tests/faults`\n\n%s", time.Now().UTC().Format(time.DateTime), md)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Errorf("write %s=%s: %v", EnvReport, path, err)
	}
}

// since formats the time from a fault to the recovery.
func since(from, to time.Time) string {
	return to.Sub(from).Round(100 * time.Millisecond).String()
}

// short cuts a reason to its first 160 characters for the table.
func short(s string) string {
	if len(s) > 160 {
		return s[:160] + "..."
	}
	return s
}
