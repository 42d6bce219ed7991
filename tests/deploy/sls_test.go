package deploy_test

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rekey-dev/rekey/shared/evidence"
	"github.com/rekey-dev/rekey/shared/handler"
	"github.com/rekey-dev/rekey/shared/notify"
	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// slsIndex is the part of infra/sls/index.json the tests read.
type slsIndex struct {
	Keys map[string]struct {
		Type     string `json:"type"`
		JSONKeys map[string]struct {
			Type string `json:"type"`
		} `json:"json_keys"`
	} `json:"keys"`
}

// commonLogFields are on every line the functions write (zerolog's level and message, the
// function's name and the invocation's request ID).
var commonLogFields = []string{"level", "message", "function", "requestId"}

func readIndex(t *testing.T) slsIndex {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "infra/sls/index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx slsIndex
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatalf("infra/sls/index.json: %v", err)
	}
	return idx
}

// TestSLSIndexHasExactlyTheLoggedFields: the Logstore index names exactly the fields the functions'
// evidence, version check and notice lines carry (plus the common ones), and the sub-keys of the
// JSON fields are exactly the ones an evidence line carries, with numbers indexed as numbers.
func TestSLSIndexHasExactlyTheLoggedFields(t *testing.T) {
	idx := readIndex(t)
	want := map[string]bool{}
	for _, set := range [][]string{commonLogFields, evidence.LogFields, handler.CheckLogFields, notify.LogFields} {
		for _, f := range set {
			want[f] = true
		}
	}
	got := slices.Sorted(maps.Keys(idx.Keys))
	if w := slices.Sorted(maps.Keys(want)); !slices.Equal(got, w) {
		t.Fatalf("infra/sls/index.json keys = %v\nlogged fields   = %v", got, w)
	}

	// One evidence line, as the functions write it.
	var b bytes.Buffer
	logger := zerolog.New(&b)
	conv := reencrypt.Counts{Listed: 3, Current: 3}
	evidence.Record{ID: "r", Cluster: "c", Key: "k", Status: "done", Pass: reencrypt.Counts{Listed: 3, Rewritten: 3}, Convergence: &conv,
		StartedAt: time.Unix(0, 0), EndedAt: time.Unix(60, 0),
		Phases: []evidence.Phase{{Name: "gate"}, {Name: "pass"}, {Name: "convergence"}, {Name: "verifier"}}}.Log(logger.Info())
	var line map[string]any
	if err := json.Unmarshal(b.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	for name, v := range line {
		sub, ok := v.(map[string]any)
		if !ok {
			if k := idx.Keys[name]; k.Type == "json" {
				t.Errorf("%s is indexed as json but logged as %T", name, v)
			}
			continue
		}
		k := idx.Keys[name]
		if k.Type != "json" {
			t.Errorf("%s is logged as an object but indexed as %q", name, k.Type)
		}
		if g, w := slices.Sorted(maps.Keys(k.JSONKeys)), slices.Sorted(maps.Keys(sub)); !slices.Equal(g, w) {
			t.Errorf("%s: index json_keys %v, logged %v", name, g, w)
		}
		for sk, sv := range sub {
			_, isNum := sv.(float64)
			typ := k.JSONKeys[sk].Type
			if isNum != (typ == "long" || typ == "double") {
				t.Errorf("%s.%s logged as %T, indexed as %q", name, sk, sv, typ)
			}
		}
	}
}

// fieldRef finds "field: value" and "field > n" in a Log Service search, and "\"a.b\"" in its SQL.
var (
	searchRef = regexp.MustCompile(`(?:^|[\s(])([A-Za-z][A-Za-z0-9]*)\s*(?::|>|<|>=|<=)\s`)
	sqlRef    = regexp.MustCompile(`"([A-Za-z]+)\.([A-Za-z]+)"`)
)

// TestSLSQueriesAndAlertsUseIndexedFields: every saved query and alert reads only fields the index
// has, and the three alerts a team needs are there.
func TestSLSQueriesAndAlertsUseIndexedFields(t *testing.T) {
	idx := readIndex(t)
	var queries []struct {
		Name  string `json:"savedsearchName"`
		Query string `json:"searchQuery"`
	}
	b, err := os.ReadFile(filepath.Join(root, "infra/sls/queries.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &queries); err != nil {
		t.Fatalf("queries.json: %v", err)
	}
	all := map[string]string{}
	for _, q := range queries {
		all["query "+q.Name] = q.Query
	}
	files, err := filepath.Glob(filepath.Join(root, "infra/sls/alerts/*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		var a struct {
			Name          string `json:"name"`
			Configuration struct {
				QueryList []struct {
					Query string `json:"query"`
				} `json:"queryList"`
				Severity []struct {
					Eval struct {
						Count string `json:"countCondition"`
					} `json:"evalCondition"`
				} `json:"severityConfigurations"`
			} `json:"configuration"`
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &a); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(a.Configuration.QueryList) != 1 || len(a.Configuration.Severity) == 0 || a.Configuration.Severity[0].Eval.Count == "" {
			t.Fatalf("%s: want one query and a severity condition", f)
		}
		names = append(names, a.Name)
		all["alert "+a.Name] = a.Configuration.QueryList[0].Query
	}
	slices.Sort(names)
	if want := []string{"rekey-critical-key-notice", "rekey-job-suspicious-or-failed", "rekey-rotation-not-verified-48h"}; !slices.Equal(names, want) {
		t.Fatalf("alerts = %v, want %v", names, want)
	}
	for what, q := range all {
		search, sql, _ := strings.Cut(q, "|")
		for _, m := range searchRef.FindAllStringSubmatch(" "+search, -1) {
			if _, ok := idx.Keys[m[1]]; !ok {
				t.Errorf("%s searches %q, which the index does not have", what, m[1])
			}
		}
		for _, m := range sqlRef.FindAllStringSubmatch(sql, -1) {
			if _, ok := idx.Keys[m[1]].JSONKeys[m[2]]; !ok {
				t.Errorf("%s reads %s.%s, which the index does not have", what, m[1], m[2])
			}
		}
	}
	// The 48-hour alert means 48 hours.
	if q := all["alert rekey-rotation-not-verified-48h"]; !strings.Contains(q, "behindSeconds > 172800") {
		t.Fatalf("the 48 h alert reads %q", q)
	}
}
