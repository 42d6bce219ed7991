// Package sconfig reads a Serverless Devs s.yaml (edition 3.0.0, component
// fc3) into Go structs, so that the local twin runs functions with the
// handler, runtime, timeout, environment and triggers users deploy, and tests
// can check s.yaml against the code. Variables ${env('X')}, ${env.X},
// ${config('X')} and ${vars.x} are substituted from maps; anything else in
// ${...} is an error.
package sconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Edition and component this package reads.
const (
	Edition   = "3.0.0"
	Component = "fc3"
	// DefaultTimeout is fc3's timeout when props.timeout is absent.
	DefaultTimeout = 3 * time.Second
)

// Trigger types.
const (
	TriggerEventBridge = "eventbridge"
	TriggerTimer       = "timer"
)

// File is an s.yaml.
type File struct {
	Edition   string              `json:"edition"`
	Name      string              `json:"name"`
	Access    string              `json:"access,omitempty"`
	Vars      map[string]any      `json:"vars,omitempty"`
	Resources map[string]Resource `json:"resources"`
}

// Resource is one entry of resources.
type Resource struct {
	Component string              `json:"component"`
	Actions   map[string][]Action `json:"actions,omitempty"`
	Props     Props               `json:"props"`
}

// Action is one hook of actions (e.g. pre-deploy).
type Action struct {
	Run  string `json:"run,omitempty"`
	Path string `json:"path,omitempty"`
}

// Props are an fc3 resource's props (the fields rekey uses).
type Props struct {
	Region               string             `json:"region"`
	FunctionName         string             `json:"functionName"`
	Description          string             `json:"description,omitempty"`
	Runtime              string             `json:"runtime"`
	Handler              string             `json:"handler"`
	Code                 json.RawMessage    `json:"code,omitempty"`
	MemorySize           int                `json:"memorySize,omitempty"`
	Timeout              int                `json:"timeout,omitempty"`
	Role                 string             `json:"role,omitempty"`
	InstanceConcurrency  *int               `json:"instanceConcurrency,omitempty"`
	EnvironmentVariables map[string]string  `json:"environmentVariables,omitempty"`
	VPCConfig            json.RawMessage    `json:"vpcConfig,omitempty"`
	LogConfig            json.RawMessage    `json:"logConfig,omitempty"`
	AsyncInvokeConfig    *AsyncInvokeConfig `json:"asyncInvokeConfig,omitempty"`
	Triggers             []Trigger          `json:"triggers,omitempty"`
}

// AsyncInvokeConfig is props.asyncInvokeConfig.
type AsyncInvokeConfig struct {
	MaxAsyncRetryAttempts     *int            `json:"maxAsyncRetryAttempts,omitempty"`
	MaxAsyncEventAgeInSeconds *int            `json:"maxAsyncEventAgeInSeconds,omitempty"`
	DestinationConfig         json.RawMessage `json:"destinationConfig,omitempty"`
}

// Trigger is one of props.triggers; TriggerConfig is decoded by EventBridge
// or Timer according to TriggerType.
type Trigger struct {
	TriggerName    string          `json:"triggerName"`
	TriggerType    string          `json:"triggerType"`
	Description    string          `json:"description,omitempty"`
	Qualifier      string          `json:"qualifier,omitempty"`
	InvocationRole string          `json:"invocationRole,omitempty"`
	SourceArn      string          `json:"sourceArn,omitempty"`
	TriggerConfig  json.RawMessage `json:"triggerConfig"`
}

// EventBridgeConfig is the triggerConfig of an eventbridge trigger.
type EventBridgeConfig struct {
	TriggerEnable          bool            `json:"triggerEnable"`
	AsyncInvocationType    bool            `json:"asyncInvocationType"`
	EventRuleFilterPattern string          `json:"eventRuleFilterPattern"`
	EventSourceConfig      json.RawMessage `json:"eventSourceConfig,omitempty"`
	RuntimeConfig          json.RawMessage `json:"runtimeConfig,omitempty"`
}

// TimerConfig is the triggerConfig of a timer trigger.
type TimerConfig struct {
	CronExpression string `json:"cronExpression"`
	Enable         bool   `json:"enable"`
	Payload        string `json:"payload,omitempty"`
}

// EventBridge decodes the trigger's config; it fails for another type.
func (t Trigger) EventBridge() (EventBridgeConfig, error) {
	var c EventBridgeConfig
	if t.TriggerType != TriggerEventBridge {
		return c, fmt.Errorf("trigger %q is %q, not eventbridge", t.TriggerName, t.TriggerType)
	}
	if err := json.Unmarshal(t.TriggerConfig, &c); err != nil {
		return c, fmt.Errorf("trigger %q: triggerConfig: %w", t.TriggerName, err)
	}
	return c, nil
}

// Timer decodes the trigger's config; it fails for another type.
func (t Trigger) Timer() (TimerConfig, error) {
	var c TimerConfig
	if t.TriggerType != TriggerTimer {
		return c, fmt.Errorf("trigger %q is %q, not timer", t.TriggerName, t.TriggerType)
	}
	if err := json.Unmarshal(t.TriggerConfig, &c); err != nil {
		return c, fmt.Errorf("trigger %q: triggerConfig: %w", t.TriggerName, err)
	}
	return c, nil
}

// Schedule splits a cronExpression into its time zone (a "CRON_TZ=Zone "
// prefix; UTC without one) and the expression proper.
func (c TimerConfig) Schedule() (*time.Location, string, error) {
	expr := strings.TrimSpace(c.CronExpression)
	if !strings.HasPrefix(expr, "CRON_TZ=") {
		return time.UTC, expr, nil
	}
	zone, rest, ok := strings.Cut(strings.TrimPrefix(expr, "CRON_TZ="), " ")
	if !ok || strings.TrimSpace(rest) == "" {
		return nil, "", fmt.Errorf("cronExpression %q: no expression after CRON_TZ", c.CronExpression)
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return nil, "", fmt.Errorf("cronExpression %q: %w", c.CronExpression, err)
	}
	return loc, strings.TrimSpace(rest), nil
}

// CodeDir returns props.code when it is a local path (a string).
func (p Props) CodeDir() (string, bool) {
	var s string
	if json.Unmarshal(p.Code, &s) != nil || s == "" {
		return "", false
	}
	return s, true
}

// EffectiveTimeout is props.timeout, or DefaultTimeout when absent.
func (p Props) EffectiveTimeout() time.Duration {
	if p.Timeout <= 0 {
		return DefaultTimeout
	}
	return time.Duration(p.Timeout) * time.Second
}

// Vars supply the values substituted into an s.yaml.
type Vars struct {
	// Env answers ${env('X')} and ${env.X}; nil means os.LookupEnv.
	Env map[string]string
	// Config answers ${config('X')} (the Serverless Devs access config, e.g.
	// AccountID).
	Config map[string]string
}

// expr matches one ${...} reference.
var expr = regexp.MustCompile(`\$\{\s*([^}]*?)\s*\}`)

var (
	callForm = regexp.MustCompile(`^(env|config)\(\s*['"]([^'"]+)['"]\s*(?:,\s*['"]([^'"]*)['"]\s*)?\)$`)
	dotForm  = regexp.MustCompile(`^(env|vars)\.([A-Za-z_][A-Za-z0-9_.-]*)$`)
)

// Parse reads an s.yaml, substitutes its variables (vars come from the file's
// own vars section) and decodes it. Every unresolved reference is reported in
// one error.
func Parse(data []byte, v Vars) (*File, error) {
	var tree any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return nil, fmt.Errorf("parse s.yaml: %w", err)
	}
	root, ok := tree.(map[string]any)
	if !ok {
		return nil, errors.New("parse s.yaml: the document is not a mapping")
	}
	fileVars, _ := root["vars"].(map[string]any)
	var problems []string
	seen := map[string]bool{}
	resolve := func(ref string) string {
		val, err := lookup(ref, v, fileVars)
		if err != nil && !seen[err.Error()] {
			seen[err.Error()] = true
			problems = append(problems, err.Error())
		}
		return val
	}
	tree = substitute(tree, resolve)
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, fmt.Errorf("parse s.yaml: %s", strings.Join(problems, "; "))
	}
	b, err := json.Marshal(tree)
	if err != nil {
		return nil, fmt.Errorf("parse s.yaml: %w", err)
	}
	// fc3 accepts many more props than these structs hold: unknown fields
	// are ignored, wrong types are errors.
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("parse s.yaml: %w", err)
	}
	return &f, nil
}

// ParseFile reads and parses the s.yaml at path.
func ParseFile(path string, v Vars) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read s.yaml: %w", err)
	}
	f, err := Parse(data, v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

func lookup(ref string, v Vars, fileVars map[string]any) (string, error) {
	if m := callForm.FindStringSubmatch(ref); m != nil {
		kind, name, def := m[1], m[2], m[3]
		hasDef := strings.Contains(ref, ",")
		var val string
		var ok bool
		switch {
		case kind == "config":
			val, ok = v.Config[name]
		case v.Env == nil:
			val, ok = os.LookupEnv(name)
		default:
			val, ok = v.Env[name]
		}
		if !ok {
			if hasDef {
				return def, nil
			}
			return "", fmt.Errorf("${%s}: %s %q is not set", ref, kind, name)
		}
		return val, nil
	}
	if m := dotForm.FindStringSubmatch(ref); m != nil {
		if m[1] == "env" {
			return lookup("env('"+m[2]+"')", v, fileVars)
		}
		val, ok := fileVars[m[2]]
		if !ok {
			return "", fmt.Errorf("${%s}: vars.%s is not defined", ref, m[2])
		}
		return fmt.Sprint(val), nil
	}
	return "", fmt.Errorf("${%s}: unsupported reference (want env('X'), env.X, config('X') or vars.x)", ref)
}

// substitute replaces references in every string of a decoded YAML tree.
func substitute(node any, resolve func(string) string) any {
	switch n := node.(type) {
	case string:
		return expr.ReplaceAllStringFunc(n, func(m string) string {
			return resolve(expr.FindStringSubmatch(m)[1])
		})
	case map[string]any:
		for k, v := range n {
			n[k] = substitute(v, resolve)
		}
		return n
	case []any:
		for i, v := range n {
			n[i] = substitute(v, resolve)
		}
		return n
	default:
		return node
	}
}

// Function is one fc3 resource, flattened.
type Function struct {
	// Resource is the key under resources.
	Resource string
	Props
	// PreDeploy are the actions' pre-deploy hooks.
	PreDeploy []Action
}

// Functions returns the fc3 resources sorted by resource key.
func (f *File) Functions() []Function {
	keys := make([]string, 0, len(f.Resources))
	for k, r := range f.Resources {
		if r.Component == Component {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	out := make([]Function, 0, len(keys))
	for _, k := range keys {
		r := f.Resources[k]
		out = append(out, Function{Resource: k, Props: r.Props, PreDeploy: r.Actions["pre-deploy"]})
	}
	return out
}

// Function returns the fc3 function whose functionName or resource key is name.
func (f *File) Function(name string) (Function, bool) {
	for _, fn := range f.Functions() {
		if fn.FunctionName == name || fn.Resource == name {
			return fn, true
		}
	}
	return Function{}, false
}

// Validate checks what fc3 itself only debug-logs: edition, components,
// required props, user environment variable names, timer and eventbridge
// trigger configs, retry bounds. It returns one error listing every problem.
func (f *File) Validate() error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if f.Edition != Edition {
		add("edition is %q, want %s", f.Edition, Edition)
	}
	if len(f.Resources) == 0 {
		add("no resources")
	}
	keys := make([]string, 0, len(f.Resources))
	for k := range f.Resources {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		r := f.Resources[k]
		if r.Component != Component {
			add("resources.%s: component %q, want %s", k, r.Component, Component)
			continue
		}
		p := r.Props
		for field, val := range map[string]string{"region": p.Region, "functionName": p.FunctionName, "runtime": p.Runtime, "handler": p.Handler} {
			if val == "" {
				add("resources.%s.props.%s is required", k, field)
			}
		}
		if _, ok := p.CodeDir(); !ok && len(p.Code) == 0 {
			add("resources.%s.props.code is required", k)
		}
		if p.Timeout <= 0 {
			add("resources.%s.props.timeout is not set (fc3 then uses 3 s)", k)
		}
		for name := range p.EnvironmentVariables {
			if strings.HasPrefix(name, "FC_") {
				add("resources.%s.props.environmentVariables.%s: names may not start with FC_", k, name)
			}
		}
		if a := p.AsyncInvokeConfig; a != nil && a.MaxAsyncRetryAttempts != nil && (*a.MaxAsyncRetryAttempts < 0 || *a.MaxAsyncRetryAttempts > 8) {
			add("resources.%s.props.asyncInvokeConfig.maxAsyncRetryAttempts %d: want 0..8", k, *a.MaxAsyncRetryAttempts)
		}
		names := map[string]bool{}
		for i, t := range p.Triggers {
			where := fmt.Sprintf("resources.%s.props.triggers[%d]", k, i)
			if t.TriggerName == "" || names[t.TriggerName] {
				add("%s: triggerName %q is empty or repeated", where, t.TriggerName)
			}
			names[t.TriggerName] = true
			switch t.TriggerType {
			case TriggerEventBridge:
				c, err := t.EventBridge()
				if err != nil {
					add("%s: %v", where, err)
				} else if strings.TrimSpace(c.EventRuleFilterPattern) == "" {
					add("%s: eventRuleFilterPattern is required", where)
				}
			case TriggerTimer:
				c, err := t.Timer()
				if err != nil {
					add("%s: %v", where, err)
				} else if _, e, err := c.Schedule(); err != nil || e == "" {
					add("%s: cronExpression %q is not usable", where, c.CronExpression)
				}
			default:
				add("%s: triggerType %q is not read by the twin (want eventbridge or timer)", where, t.TriggerType)
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("s.yaml: %s", strings.Join(problems, "; "))
	}
	return nil
}
