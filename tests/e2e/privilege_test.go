package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rekey-dev/rekey/cmd/rekey/cli"
	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/twin"
	"github.com/rekey-dev/rekey/shared/adoption"
	"github.com/rekey-dev/rekey/shared/state"
)

// The shipped RBAC files and the users they bind.
const (
	cliRBACFile      = "../../infra/rbac/rekey.yaml"
	functionRBACFile = "../../" + twin.RBACFile
	cliUser          = "rekey"
)

// rbacRole is a ClusterRole or Role of a shipped RBAC file.
type rbacRole struct {
	Kind, Namespace, Name string
	Rules                 []rbacv1.PolicyRule
}

func (r rbacRole) String() string {
	if r.Namespace != "" {
		return r.Kind + "/" + r.Namespace + "/" + r.Name
	}
	return r.Kind + "/" + r.Name
}

// readRoles returns the ClusterRoles and Roles of an RBAC file, in file order.
func readRoles(t *testing.T, path string) []rbacRole {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []rbacRole
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			continue // a document of comments only
		}
		switch o := obj.(type) {
		case *rbacv1.ClusterRole:
			out = append(out, rbacRole{Kind: "ClusterRole", Name: o.Name, Rules: o.Rules})
		case *rbacv1.Role:
			out = append(out, rbacRole{Kind: "Role", Namespace: o.Namespace, Name: o.Name, Rules: o.Rules})
		}
	}
}

// rbacCase is one permission of a shipped file taken away: a verb of a resource rule, or a URL
// of a non-resource rule.
type rbacCase struct {
	File string
	Role rbacRole
	// Rule is the index of the rule in Role.Rules.
	Rule int
	// Verb and Group/Resource for a resource rule; Verb "get" and URL for a non-resource one.
	Verb, Group, Resource, URL string
	// Name is the one object a resource rule is limited to ("": any).
	Name string
}

// ID names the permission, e.g. "rekey.yaml ClusterRole/rekey: list secrets".
func (c rbacCase) ID() string {
	what := c.URL
	if what == "" {
		what = c.Resource
		if c.Group != "" {
			what += "." + c.Group
		}
		if c.Name != "" {
			what += "/" + c.Name
		}
	}
	return fmt.Sprintf("%s %s: %s %s", filepath.Base(c.File), c.Role, c.Verb, what)
}

// without returns the role with the case's permission removed.
func (c rbacCase) without() rbacRole {
	r := c.Role
	r.Rules = nil
	for i, rule := range c.Role.Rules {
		rule = *rule.DeepCopy()
		if i == c.Rule {
			if c.URL != "" {
				rule.NonResourceURLs = slices.DeleteFunc(rule.NonResourceURLs, func(u string) bool { return u == c.URL })
				if len(rule.NonResourceURLs) == 0 {
					continue
				}
			} else {
				rule.Verbs = slices.DeleteFunc(rule.Verbs, func(v string) bool { return v == c.Verb })
				if len(rule.Verbs) == 0 {
					continue
				}
			}
		}
		r.Rules = append(r.Rules, rule)
	}
	return r
}

// rbacCases lists every permission of every role of an RBAC file (one resource per rule, as the
// shipped files are written).
func rbacCases(t *testing.T, path string) []rbacCase {
	t.Helper()
	var out []rbacCase
	for _, r := range readRoles(t, path) {
		for i, rule := range r.Rules {
			if len(rule.NonResourceURLs) > 0 {
				for _, u := range rule.NonResourceURLs {
					out = append(out, rbacCase{File: path, Role: r, Rule: i, Verb: strings.Join(rule.Verbs, ","), URL: u})
				}
				continue
			}
			if len(rule.Resources) != 1 || len(rule.APIGroups) != 1 || len(rule.ResourceNames) > 1 {
				t.Fatalf("%s %s rule %d: one group, one resource and at most one resourceName per rule, please", path, r, i)
			}
			for _, v := range rule.Verbs {
				c := rbacCase{File: path, Role: r, Rule: i, Verb: v, Group: rule.APIGroups[0], Resource: rule.Resources[0]}
				if len(rule.ResourceNames) == 1 {
					c.Name = rule.ResourceNames[0]
				}
				out = append(out, c)
			}
		}
	}
	return out
}

// applyRole replaces the rules of a role of the cluster (as admin).
func applyRole(t *testing.T, cs kubernetes.Interface, r rbacRole) {
	t.Helper()
	ctx := context.Background()
	var err error
	if r.Kind == "ClusterRole" {
		var o *rbacv1.ClusterRole
		if o, err = cs.RbacV1().ClusterRoles().Get(ctx, r.Name, metav1.GetOptions{}); err == nil {
			o.Rules = r.Rules
			_, err = cs.RbacV1().ClusterRoles().Update(ctx, o, metav1.UpdateOptions{})
		}
	} else {
		var o *rbacv1.Role
		if o, err = cs.RbacV1().Roles(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{}); err == nil {
			o.Rules = r.Rules
			_, err = cs.RbacV1().Roles(r.Namespace).Update(ctx, o, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		t.Fatalf("apply %s: %v", r, err)
	}
}

// grants reports whether roles (all bound to one user) allow the case's permission.
func grants(roles []rbacRole, c rbacCase) bool {
	for _, r := range roles {
		for _, rule := range r.Rules {
			if c.URL != "" {
				if slices.Contains(rule.NonResourceURLs, c.URL) && slices.Contains(rule.Verbs, "get") {
					return true
				}
				continue
			}
			if (r.Kind == "ClusterRole" || r.Namespace == c.Role.Namespace) && slices.Contains(rule.APIGroups, c.Group) &&
				slices.Contains(rule.Resources, c.Resource) && slices.Contains(rule.Verbs, c.Verb) &&
				(len(rule.ResourceNames) == 0 || slices.Contains(rule.ResourceNames, c.Name)) {
				return true
			}
		}
	}
	return false
}

// waitAuthorized polls the API server's authorizer until user's access to the case's permission
// is allowed (the RBAC authorizer sees role changes through an informer, a moment later).
func waitAuthorized(t *testing.T, cs kubernetes.Interface, user string, c rbacCase, allowed bool) {
	t.Helper()
	spec := authorizationv1.SubjectAccessReviewSpec{User: user, Groups: []string{"system:authenticated"}}
	if c.URL != "" {
		spec.NonResourceAttributes = &authorizationv1.NonResourceAttributes{Verb: "get", Path: c.URL}
	} else {
		spec.ResourceAttributes = &authorizationv1.ResourceAttributes{Verb: c.Verb, Group: c.Group, Resource: c.Resource, Namespace: c.Role.Namespace, Name: c.Name}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed == allowed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s still allowed=%v after 30s", c.ID(), user, r.Status.Allowed)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// necessity is what taking a permission away must do.
type necessity struct {
	// Kind: "required" (the run fails and names the permission), "fallback" (the run succeeds
	// with weaker evidence and says why), "unnecessary" (nothing changes: remove it).
	Kind string
	// Exit is the CLI's exit status without the permission.
	Exit int
	// Want are substrings the run's output must contain.
	Want []string
}

// privilegeRow is one line of the report.
type privilegeRow struct {
	Case, Kind, Result string
	Took               time.Duration
}

// impersonatingKubeconfig writes a kubeconfig that reaches the cluster as user: the admin's
// credential with impersonation, so that every request is authorized as user alone (groups
// system:authenticated), exactly as a token user bound by the shipped file would be.
func impersonatingKubeconfig(t *testing.T, c *controlplane.Cluster, user string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), user+".kubeconfig")
	if err := c.WriteKubeconfig(controlplane.AdminUser, path); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range cfg.AuthInfos {
		a.Impersonate = user
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// cliPrivilege removes each permission of infra/rbac/rekey.yaml in turn and runs `rekey run` (with
// the KMS guard and the adoption gate) as the user it binds.
func cliPrivilege(t *testing.T, h *hygiene) []privilegeRow {
	admin := typed(t, h.tw.Cluster)
	want := map[string]necessity{
		"rekey.yaml ClusterRole/rekey: list secrets":  {"required", cli.ExitUsage, []string{"list secrets (all namespaces)"}},
		"rekey.yaml ClusterRole/rekey: get secrets":   {"required", cli.ExitUsage, []string{"get secrets (all namespaces)"}},
		"rekey.yaml ClusterRole/rekey: patch secrets": {"required", cli.ExitUsage, []string{"patch secrets (all namespaces)"}},
		// The verifier's apiserver layer fails, naming the path.
		"rekey.yaml ClusterRole/rekey: get /readyz/kms-providers": {"required", cli.ExitFailed, []string{`/readyz/kms-providers`, `cannot get path`}},
		// Without reading its FlowSchema rekey cannot tell whether APF paces it: it paces itself,
		// bounded, and says why.
		"rekey.yaml ClusterRole/rekey: get flowschemas.flowcontrol.apiserver.k8s.io/rekey": {"fallback", cli.ExitOK, []string{"may not read FlowSchema rekey", "rekey paces itself instead"}},
		// Without /metrics the gate proves adoption with the effect canaries recorded by earlier runs.
		"rekey.yaml ClusterRole/rekey-metrics: get /metrics": {"fallback", cli.ExitOK, []string{`"kind":"canary"`, `"direct":true`}},
		// Without create the gate cannot record canaries for the next rotation, and says so.
		"rekey.yaml Role/rekey-system/rekey-adoption: create secrets": {"fallback", cli.ExitOK, []string{"canaries not recorded", `cannot create resource \"secrets\"`}},
		// Without the identity Leases the number of API server replicas is not known: the
		// convergence pass cannot show it covered them all, and without etcd nothing else proves.
		"rekey.yaml Role/kube-system/rekey-replicas: list leases.coordination.k8s.io": {"required", cli.ExitFailed, []string{"may not list Leases in kube-system"}},
	}
	defer unusedExpectations(t, want, cliRBACFile)
	var rows []privilegeRow
	cases := rbacCases(t, cliRBACFile)
	// Canary creation last: its case deletes the canaries the /metrics case relies on.
	slices.SortStableFunc(cases, func(a, b rbacCase) int { return boolInt(isCanaryCreate(a)) - boolInt(isCanaryCreate(b)) })
	all := readRoles(t, cliRBACFile)
	for _, c := range cases {
		nec, ok := want[c.ID()]
		if !ok {
			t.Errorf("%s: no expectation: show that it is required (or remove it from the file)", c.ID())
			continue
		}
		t0 := time.Now()
		applyRole(t, admin, c.without())
		if !grants(withoutRole(all, c), c) {
			waitAuthorized(t, admin, cliUser, c, false)
		}
		if isCanaryCreate(c) {
			deleteCanaries(t, admin)
		}
		code, stdout, stderr := h.cli(t, "privilege "+c.ID(), h.runArgs("--output", "json")...)
		var compact bytes.Buffer
		if json.Compact(&compact, []byte(stdout)) == nil {
			stdout = compact.String()
		}
		out := stdout + "\n" + stderr
		result := fmt.Sprintf("exit %d", code)
		if code != nec.Exit {
			t.Errorf("%s removed: exit %d, want %d\n%s\n%s", c.ID(), code, nec.Exit, notPassing(stdout), tail([]byte(out), 20))
		}
		if nec.Kind == "unnecessary" {
			t.Errorf("%s removed: exit %d: the permission is not needed, remove it from the file", c.ID(), code)
		}
		for _, w := range nec.Want {
			if !strings.Contains(out, w) {
				t.Errorf("%s removed: output lacks %q\n%s", c.ID(), w, tail([]byte(out), 20))
			}
		}
		result += ", " + firstLine(out, nec.Want)
		applyRole(t, admin, c.Role)
		waitAuthorized(t, admin, cliUser, c, true)
		rows = append(rows, privilegeRow{Case: c.ID(), Kind: nec.Kind, Result: result, Took: time.Since(t0)})
	}
	// Put the canaries back for what follows.
	if code, _, stderr := h.cli(t, "privilege restore", h.runArgs("--output", "json")...); code != cli.ExitOK {
		t.Fatalf("run with the shipped RBAC after the cases: exit %d\n%s", code, tail([]byte(stderr), 20))
	}
	return rows
}

// functionPrivilege removes each permission of infra/rbac/rekey-function.yaml in turn and fires
// the off-peak timer inside the window on a fresh state: the function records a job and runs it
// (Lease, checkpoint, access check, strategy, adoption gate, pass, convergence, verifier, state).
func functionPrivilege(t *testing.T, h *hygiene) []privilegeRow {
	admin := typed(t, h.tw.Cluster)
	state := func(verb, resource string) []string {
		return []string{fmt.Sprintf(`\"%s\" on %s in namespace %s`, verb, resource, "rekey-system")}
	}
	want := map[string]necessity{
		"rekey-function.yaml ClusterRole/rekey-function: list secrets":                                       {"required", 0, []string{"list secrets (all namespaces)"}},
		"rekey-function.yaml ClusterRole/rekey-function: get secrets":                                        {"required", 0, []string{"get secrets (all namespaces)"}},
		"rekey-function.yaml ClusterRole/rekey-function: patch secrets":                                      {"required", 0, []string{"patch secrets (all namespaces)"}},
		"rekey-function.yaml ClusterRole/rekey-function: get /readyz/kms-providers":                          {"required", 0, []string{"/readyz/kms-providers", "cannot get path"}},
		"rekey-function.yaml ClusterRole/rekey-function: get /metrics":                                       {"fallback", 0, []string{`"kind":"canary"`}},
		"rekey-function.yaml ClusterRole/rekey-function: get flowschemas.flowcontrol.apiserver.k8s.io/rekey": {"fallback", 0, []string{"may not read FlowSchema rekey"}},
		"rekey-function.yaml Role/rekey-system/rekey-function: get configmaps":                               {"required", 0, state("get", "configmaps")},
		"rekey-function.yaml Role/rekey-system/rekey-function: create configmaps":                            {"required", 0, state("create", "configmaps")},
		"rekey-function.yaml Role/rekey-system/rekey-function: list configmaps":                              {"fallback", 0, []string{"evidenceError", "older records not pruned", `\"list\" on configmaps`}},
		"rekey-function.yaml Role/rekey-system/rekey-function: update configmaps":                            {"required", 0, state("update", "configmaps")},
		"rekey-function.yaml Role/rekey-system/rekey-function: delete configmaps":                            {"required", 0, state("delete", "configmaps")},
		"rekey-function.yaml Role/rekey-system/rekey-function: get leases.coordination.k8s.io":               {"required", 0, state("get", "leases.coordination.k8s.io")},
		"rekey-function.yaml Role/rekey-system/rekey-function: create leases.coordination.k8s.io":            {"required", 0, state("create", "leases.coordination.k8s.io")},
		"rekey-function.yaml Role/rekey-system/rekey-function: update leases.coordination.k8s.io":            {"required", 0, state("update", "leases.coordination.k8s.io")},
		"rekey-function.yaml Role/rekey-system/rekey-function: create secrets":                               {"fallback", 0, []string{"canaries not recorded", `cannot create resource \"secrets\"`}},
		"rekey-function.yaml Role/kube-system/rekey-function-replicas: list leases.coordination.k8s.io":      {"required", 0, []string{"may not list Leases in kube-system"}},
	}
	defer unusedExpectations(t, want, functionRBACFile)
	cases := rbacCases(t, functionRBACFile)
	slices.SortStableFunc(cases, func(a, b rbacCase) int { return boolInt(isCanaryCreate(a)) - boolInt(isCanaryCreate(b)) })
	all := readRoles(t, functionRBACFile)
	at, err := h.tw.WindowTime(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var rows []privilegeRow
	for _, c := range cases {
		nec, ok := want[c.ID()]
		if !ok {
			t.Errorf("%s: no expectation: show that it is required (or remove it from the file)", c.ID())
			continue
		}
		t0 := time.Now()
		resetState(t, admin, true)
		if c.Verb == "update" && c.Resource == "leases" {
			// A Lease released by an earlier run: taking it is an update.
			if calls, err := h.tw.Tick(context.Background(), at); err != nil || !jobDone(t, calls) {
				t.Fatalf("tick with the shipped RBAC before %s: %v", c.ID(), err)
			}
			resetState(t, admin, false)
		}
		applyRole(t, admin, c.without())
		if !grants(withoutRole(all, c), c) {
			waitAuthorized(t, admin, twin.FunctionUser, c, false)
		}
		if isCanaryCreate(c) {
			deleteCanaries(t, admin)
		}
		calls, _ := h.tw.Tick(context.Background(), at)
		var out strings.Builder
		for _, call := range calls {
			out.Write(call.Result.Body)
			if call.Result.Error != nil {
				out.WriteString(" error: " + call.Result.Error.Message)
			}
		}
		done := jobDone(t, calls)
		text := out.String()
		switch nec.Kind {
		case "required":
			if done {
				t.Errorf("%s removed: the job was done; want it to fail naming the permission\n%s", c.ID(), clip(text, 3000))
			}
		case "fallback":
			if !done {
				t.Errorf("%s removed: the job was not done; want it to fall back\n%s", c.ID(), clip(text, 3000))
			}
		}
		for _, w := range nec.Want {
			if !strings.Contains(text, w) {
				t.Errorf("%s removed: the tick's answer lacks %q\n%s", c.ID(), w, clip(text, 3000))
			}
		}
		result := "job not done"
		if done {
			result = "job done"
		}
		result += ", " + firstLine(text, nec.Want)
		applyRole(t, admin, c.Role)
		waitAuthorized(t, admin, twin.FunctionUser, c, true)
		rows = append(rows, privilegeRow{Case: c.ID(), Kind: nec.Kind, Result: result, Took: time.Since(t0)})
	}
	return rows
}

// unusedExpectations fails for an expectation no permission of the file has any more.
func unusedExpectations(t *testing.T, want map[string]necessity, path string) {
	t.Helper()
	have := map[string]bool{}
	for _, c := range rbacCases(t, path) {
		have[c.ID()] = true
	}
	for id := range want {
		if !have[id] {
			t.Errorf("expectation %q: %s has no such permission any more", id, filepath.Base(path))
		}
	}
}

func withoutRole(all []rbacRole, c rbacCase) []rbacRole {
	out := make([]rbacRole, 0, len(all))
	for _, r := range all {
		if r.String() == c.Role.String() {
			r = c.without()
		}
		out = append(out, r)
	}
	return out
}

func isCanaryCreate(c rbacCase) bool {
	return c.Verb == "create" && c.Resource == "secrets" && c.Role.Namespace == adoption.DefaultNamespace
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// resetState deletes the functions' state and checkpoints (and with lease their Lease), as on a
// cluster they never ran on.
func resetState(t *testing.T, cs kubernetes.Interface, lease bool) {
	t.Helper()
	ctx := context.Background()
	if err := cs.CoreV1().ConfigMaps(state.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if !lease {
		return
	}
	if err := cs.CoordinationV1().Leases(state.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
}

// jobDone reports whether an off-peak tick ran a job that ended done.
func jobDone(t *testing.T, calls []twin.Invocation) bool {
	t.Helper()
	for _, call := range calls {
		if r, ok := offpeakResult(t, call); ok {
			for _, cl := range r.Clusters {
				for _, j := range cl.Jobs {
					if j.Outcome.Status == "done" {
						return true
					}
				}
			}
		}
	}
	return false
}

// deleteCanaries deletes the adoption gate's canaries and ledger.
func deleteCanaries(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	err := cs.CoreV1().Secrets(adoption.DefaultNamespace).DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: adoption.CanaryLabel})
	if err != nil {
		t.Fatal(err)
	}
}

// firstLine returns the first wanted substring's surroundings, for the report.
func firstLine(text string, want []string) string {
	for _, w := range want {
		if i := strings.Index(text, w); i >= 0 {
			lo, hi := max(0, i-80), min(len(text), i+len(w)+40)
			return strings.Join(strings.Fields(text[lo:hi]), " ")
		}
	}
	return "(nothing named)"
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// logPrivilegeTable prints the verb -> result table.
func logPrivilegeTable(t *testing.T, rows []privilegeRow) {
	t.Helper()
	var b strings.Builder
	b.WriteString("least privilege: permission removed -> result\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "  %-80s %-8s %6.1fs  %s\n", r.Case, r.Kind, r.Took.Seconds(), r.Result)
	}
	t.Log(b.String())
	if b, err := json.Marshal(rows); err == nil {
		t.Logf("least privilege (json): %s", b)
	}
}

// notPassing lists what a JSON result names as not PASS (every object with a "status" other than
// PASS and its "reasons"), to say why a run's verdict was not what a test wanted.
func notPassing(stdout string) string {
	var v any
	if json.Unmarshal([]byte(stdout), &v) != nil {
		return "(result is not JSON)"
	}
	var lines []string
	var walk func(any)
	walk = func(x any) {
		switch x := x.(type) {
		case map[string]any:
			if st, ok := x["status"].(string); ok && st != "PASS" && x["reasons"] != nil {
				lines = append(lines, fmt.Sprintf("%v %s: %v", x["name"], st, x["reasons"]))
			}
			for _, y := range x {
				walk(y)
			}
		case []any:
			for _, y := range x {
				walk(y)
			}
		}
	}
	walk(v)
	return strings.Join(lines, "\n")
}
