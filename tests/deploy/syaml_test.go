package deploy_test

import (
	"debug/elf"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/rekey-dev/rekey/infra/local/eventbridge"
	"github.com/rekey-dev/rekey/infra/local/sconfig"
	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/policy"
)

const (
	root    = "../.."
	account = "5068000000000001"
	region  = "cn-hangzhou"
	// The key and the cluster of the shared/events fixtures.
	fixtureKey     = "key-hzz63a1b2c3d4e5f6g7h8"
	fixtureCluster = "c0123456789abcdef0123456789abcdef"
)

// functions are the fc3 resources s.yaml must hold, with their packages.
var functions = map[string]string{"rotation": "./functions/rotation", "offpeak": "./functions/offpeak"}

// deployEnv is what a user exports before s deploy (only the required variables).
var deployEnv = map[string]string{
	"REGION": region, "VPC_ID": "vpc-test", "VSWITCH_ID": "vsw-test", "SECURITY_GROUP_ID": "sg-test",
	config.EnvTargets: fixtureCluster + "=" + fixtureKey,
}

func load(t *testing.T) *sconfig.File {
	t.Helper()
	f, err := sconfig.ParseFile(filepath.Join(root, "s.yaml"), sconfig.Vars{Env: deployEnv, Config: map[string]string{"AccountID": account}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSYamlFunctions(t *testing.T) {
	f := load(t)
	if got := len(f.Functions()); got != len(functions) {
		t.Fatalf("s.yaml has %d functions, want %d", got, len(functions))
	}
	for name, pkg := range functions {
		fn, ok := f.Function(name)
		if !ok {
			t.Fatalf("s.yaml: no function %s", name)
		}
		if fn.Runtime != "go1" || fn.Handler != "main" {
			t.Errorf("%s: runtime %q handler %q, want go1 / main (fc-runtime-go-sdk)", name, fn.Runtime, fn.Handler)
		}
		if fn.Timeout <= 0 || fn.MemorySize <= 0 || fn.Role == "" || len(fn.VPCConfig) == 0 || len(fn.LogConfig) == 0 {
			t.Errorf("%s: timeout %d memorySize %d role %q vpcConfig %s logConfig %s: all must be set",
				name, fn.Timeout, fn.MemorySize, fn.Role, fn.VPCConfig, fn.LogConfig)
		}
		if a := fn.AsyncInvokeConfig; a == nil || a.MaxAsyncRetryAttempts == nil {
			t.Errorf("%s: asyncInvokeConfig.maxAsyncRetryAttempts is not set", name)
		}
		if !strings.HasSuffix(fn.Role, ":role/rekey-function") || !strings.Contains(fn.Role, account) {
			t.Errorf("%s: role %q, want the rekey-function role of the account", name, fn.Role)
		}
		if fn.InstanceConcurrency != nil {
			t.Errorf("%s: instanceConcurrency is not supported by runtime go1", name)
		}

		// The environment is exactly config.Vars, and the loader accepts it as deployed.
		names := slices.Sorted(maps.Keys(fn.EnvironmentVariables))
		if want := slices.Sorted(slices.Values(config.Vars)); !slices.Equal(names, want) {
			t.Errorf("%s: environment variables %v, want config.Vars %v", name, names, want)
		}
		if _, err := config.Load(func(k string) string { return fn.EnvironmentVariables[k] }, config.Own{Region: region, AccountID: account}); err != nil {
			t.Errorf("%s: config.Load rejects the deployed environment: %v", name, err)
		}

		// The pre-deploy build is the one that produces props.code/main, for linux/amd64.
		code, ok := fn.CodeDir()
		if !ok {
			t.Fatalf("%s: code is not a local directory", name)
		}
		if len(fn.PreDeploy) != 1 {
			t.Fatalf("%s: %d pre-deploy actions, want one go build", name, len(fn.PreDeploy))
		}
		buildFunction(t, name, fn.PreDeploy[0], pkg, code)
	}
}

// buildFunction runs the pre-deploy go build, writing the binary into a temporary directory, and
// checks what it builds.
func buildFunction(t *testing.T, name string, a sconfig.Action, pkg, code string) {
	t.Helper()
	fields := strings.Fields(a.Run)
	var env []string
	for len(fields) > 0 && strings.Contains(fields[0], "=") {
		env = append(env, fields[0])
		fields = fields[1:]
	}
	if want := []string{"GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0"}; !slices.Equal(slices.Sorted(slices.Values(env)), slices.Sorted(slices.Values(want))) {
		t.Fatalf("%s: pre-deploy environment %v, want %v", name, env, want)
	}
	if len(fields) < 2 || fields[0] != "go" || fields[1] != "build" || fields[len(fields)-1] != pkg {
		t.Fatalf("%s: pre-deploy %q does not build %s", name, a.Run, pkg)
	}
	out := slices.Index(fields, "-o")
	if out < 0 || out+1 >= len(fields) {
		t.Fatalf("%s: pre-deploy %q has no -o", name, a.Run)
	}
	if got, want := filepath.Clean(fields[out+1]), filepath.Join(filepath.Clean(code), "main"); got != want {
		t.Fatalf("%s: builds %s, but the code directory's handler is %s", name, got, want)
	}
	bin := filepath.Join(t.TempDir(), "main")
	fields[out+1] = bin
	cmd := exec.Command(fields[0], fields[1:]...)
	cmd.Dir = filepath.Join(root, a.Path)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %s: %v\n%s", name, a.Run, err, b)
	}
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("%s: the binary is not ELF: %v", name, err)
	}
	defer ef.Close()
	if ef.Machine != elf.EM_X86_64 {
		t.Fatalf("%s: binary for %v, want x86-64", name, ef.Machine)
	}
}

// timers returns the offpeak function's timer triggers by name.
func timers(t *testing.T, fn sconfig.Function) map[string]sconfig.TimerConfig {
	t.Helper()
	out := map[string]sconfig.TimerConfig{}
	for _, tr := range fn.Triggers {
		if tr.TriggerType == sconfig.TriggerTimer {
			c, err := tr.Timer()
			if err != nil {
				t.Fatal(err)
			}
			out[tr.TriggerName] = c
		}
	}
	return out
}

// fires lists when a timer fires over one day starting at day (in the timer's zone).
func fires(t *testing.T, c sconfig.TimerConfig, day time.Time) (*time.Location, []time.Time) {
	t.Helper()
	loc, expr, err := c.Schedule()
	if err != nil {
		t.Fatal(err)
	}
	sched, err := cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow).Parse(expr)
	if err != nil {
		t.Fatalf("cron %q: %v", expr, err)
	}
	start := time.Date(day.Year(), day.Month(), day.Day(), 0, 0, 0, 0, loc)
	var out []time.Time
	for at := sched.Next(start.Add(-time.Second)); at.Before(start.Add(24 * time.Hour)); at = sched.Next(at) {
		out = append(out, at)
	}
	return loc, out
}

// TestSYamlTimersAgreeWithTheWindow: the 'offpeak' timer fires only inside REKEY_WINDOW, in
// REKEY_TIMEZONE (the defaults s.yaml deploys), and leaves no gap of more than 10 minutes inside it
// (window start and end included); the 'watch' timer fires all day, at most 5 minutes apart (an
// immediate-mode job starts within REKEY_SETTLE plus 5 minutes). A cron changed without the window,
// or the window without the cron, fails here.
func TestSYamlTimersAgreeWithTheWindow(t *testing.T) {
	fn, _ := load(t).Function("offpeak")
	ts := timers(t, fn)
	off, watch := ts["offpeak"], ts["watch"]
	if len(ts) != 2 || !off.Enable || !watch.Enable {
		t.Fatalf("offpeak timers %+v, want 'offpeak' and 'watch', enabled", ts)
	}
	zone := defaultOf(t, fn, config.EnvTimezone)
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	w, err := config.ParseWindow(defaultOf(t, fn, config.EnvWindow), loc)
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 11, 28, 0, 0, 0, 0, loc)
	for name, c := range ts {
		if tz, _, err := c.Schedule(); err != nil || tz.String() != zone {
			t.Errorf("timer %s: zone %v (%v), want REKEY_TIMEZONE %s", name, tz, err, zone)
		}
	}
	_, at := fires(t, off, day)
	if len(at) == 0 {
		t.Fatal("the offpeak timer never fires")
	}
	for _, x := range at {
		if !w.Contains(x) {
			t.Errorf("the offpeak timer fires at %s, outside REKEY_WINDOW %s", x.Format("15:04"), w)
		}
	}
	// Gaps inside the window: from its start to the first tick, between ticks, from the last to its end.
	start := day.Add(time.Duration(w.Start) * time.Minute)
	end := start.Add(w.Left(start))
	prev := start
	for _, x := range append(at, end) {
		if gap := x.Sub(prev); gap > 10*time.Minute {
			t.Errorf("the offpeak timer leaves %s without a tick inside the window (%s to %s)", gap, prev.Format("15:04"), x.Format("15:04"))
		}
		prev = x
	}
	_, all := fires(t, watch, day)
	prev = day
	for _, x := range append(all, day.Add(24*time.Hour)) {
		if gap := x.Sub(prev); gap > 5*time.Minute {
			t.Errorf("the watch timer leaves %s without a tick (%s to %s)", gap, prev.Format("15:04"), x.Format("15:04"))
		}
		prev = x
	}
	if !strings.Contains(off.Payload, `"mode":"offpeak"`) || !strings.Contains(watch.Payload, `"mode":"watch"`) {
		t.Errorf("payloads %q and %q: want the modes the handler reads", off.Payload, watch.Payload)
	}
}

// defaultOf is the value s.yaml deploys for a variable when the shell does not set it.
func defaultOf(t *testing.T, fn sconfig.Function, name string) string {
	t.Helper()
	v, ok := fn.EnvironmentVariables[name]
	if !ok || v == "" {
		t.Fatalf("%s is not in the offpeak function's environment", name)
	}
	return v
}

func TestSYamlEventBridgeTriggers(t *testing.T) {
	fn, _ := load(t).Function("rotation")
	patterns := map[string]string{}
	seenEB := false
	for _, tr := range fn.Triggers {
		if tr.TriggerType != sconfig.TriggerEventBridge {
			if seenEB {
				t.Errorf("trigger %s follows an eventbridge trigger: fc3 may skip it", tr.TriggerName)
			}
			continue
		}
		seenEB = true
		c, err := tr.EventBridge()
		if err != nil {
			t.Fatal(err)
		}
		if !c.TriggerEnable {
			t.Errorf("trigger %s is disabled", tr.TriggerName)
		}
		patterns[tr.TriggerName] = c.EventRuleFilterPattern
	}
	// One source of truth: infra/eventbridge/<trigger>.json says the same thing.
	files, err := filepath.Glob(filepath.Join(root, "infra", "eventbridge", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(patterns) {
		t.Errorf("%d files in infra/eventbridge, %d eventbridge triggers", len(files), len(patterns))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".json")
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		p, ok := patterns[name]
		if !ok {
			t.Errorf("%s: no trigger %s in s.yaml", file, name)
			continue
		}
		var fromFile, fromYAML any
		if err := json.Unmarshal(b, &fromFile); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if err := json.Unmarshal([]byte(p), &fromYAML); err != nil {
			t.Fatalf("s.yaml trigger %s: %v", name, err)
		}
		if !reflect.DeepEqual(fromFile, fromYAML) {
			t.Errorf("trigger %s: s.yaml pattern %s differs from %s", name, p, file)
		}
	}
	var compiled []*eventbridge.Pattern
	for name, p := range patterns {
		c, err := eventbridge.ParsePattern(p)
		if err != nil {
			t.Fatalf("trigger %s: %v", name, err)
		}
		compiled = append(compiled, c)
	}
	matches := func(t *testing.T, raw []byte) bool {
		t.Helper()
		n := 0
		for _, p := range compiled {
			ok, err := p.Match(raw)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				n++
			}
		}
		if n > 1 {
			t.Fatalf("%d triggers match one event: it would be delivered twice", n)
		}
		return n == 1
	}

	cfg, err := config.Load(func(k string) string { return deployEnv[k] }, config.Own{Region: region, AccountID: account})
	if err != nil {
		t.Fatal(err)
	}

	// Every fixture the policy acts on is delivered.
	fixtures, _ := filepath.Glob(filepath.Join(root, "shared", "events", "testdata", "*.json"))
	acted := 0
	for _, file := range fixtures {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		p, err := events.Decode(raw)
		if err != nil || p.Timer != nil || len(p.Events) != 1 || strings.HasPrefix(strings.TrimSpace(string(raw)), "[") {
			continue // timers and batches are not rule-matched events
		}
		d := policy.Decide(p.Events[0], cfg, policy.State{})
		if d.Kind != policy.Ignore {
			acted++
			if !matches(t, raw) {
				t.Errorf("%s: the policy decides %s (%s) but no trigger delivers it", filepath.Base(file), d.Kind, d.Reason)
			}
		}
	}
	if acted < 4 {
		t.Fatalf("only %d fixtures acted on: the fixtures or the configuration moved", acted)
	}

	// Exactly the API names the policy acts on are delivered, for every type: reads (Encrypt...),
	// other writes and other sources are not.
	kmsNames := []string{
		events.KMSCreateKeyVersion, events.KMSUpdateRotationPolicy, events.KMSDisableKey, events.KMSEnableKey,
		events.KMSScheduleKeyDeletion, events.KMSCancelKeyDeletion, events.KMSDeleteKeyMaterial,
		"Encrypt", "Decrypt", "GenerateDataKey", "DescribeKey", "ListKeyVersions", "CreateKey", "TagResource",
		"UpdateAlias", "DeleteAlias", "CreateAlias", "ImportKeyMaterial", "UpdateKeyDescription",
	}
	kmsTemplate := readMap(t, "kms-createkeyversion.json")
	for _, typ := range events.KMSTypes {
		for _, name := range kmsNames {
			checkEquivalence(t, cfg, kmsTemplate, typ, name, matches)
		}
	}
	csTemplate := readMap(t, "cs-updatekmsencryption.json")
	for _, typ := range append([]string{"cs:ActionTrail:ConsoleOperation"}, events.CSTypes...) {
		for _, name := range []string{events.CSUpdateKMSEncryption, "DescribeClusterUserKubeconfig", "DeleteCluster", "ModifyCluster", "UpgradeCluster"} {
			checkEquivalence(t, cfg, csTemplate, typ, name, matches)
		}
	}
	// Another product's event with an acted-on name is not delivered.
	other := readMap(t, "kms-createkeyversion.json")
	other["source"], other["type"] = "acs.ecs", "ecs:ActionTrail:ApiCall"
	if matches(t, mustJSON(t, other)) {
		t.Errorf("an acs.ecs event is delivered")
	}
}

// checkEquivalence builds an event of typ and name from tmpl (same account, region, watched key
// or cluster, no errorCode) and checks: a trigger delivers it exactly when the policy acts on it.
func checkEquivalence(t *testing.T, cfg config.Config, tmpl map[string]any, typ, name string, matches func(*testing.T, []byte) bool) {
	t.Helper()
	ev := deepCopy(t, tmpl)
	ev["id"] = "eq-" + typ + "-" + name
	ev["type"] = typ
	data := ev["data"].(map[string]any)
	data["eventName"] = name
	data["eventId"] = "rec-" + typ + "-" + name
	data["eventType"] = typ[strings.LastIndex(typ, ":")+1:]
	raw := mustJSON(t, ev)
	p, err := events.Decode(raw)
	if err != nil {
		t.Fatalf("%s %s: %v", typ, name, err)
	}
	d := policy.Decide(p.Events[0], cfg, policy.State{})
	acts := d.Kind != policy.Ignore
	if got := matches(t, raw); got != acts {
		t.Errorf("%s %s: delivered=%v but the policy decides %s (%s)", typ, name, got, d.Kind, d.Reason)
	}
}

func readMap(t *testing.T, fixture string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "shared", "events", "testdata", fixture))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func deepCopy(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal(mustJSON(t, m), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
