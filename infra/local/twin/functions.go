package twin

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/rekey-dev/rekey/infra/local/eventbridge"
	"github.com/rekey-dev/rekey/infra/local/fc"
	"github.com/rekey-dev/rekey/infra/local/sconfig"
	"github.com/rekey-dev/rekey/shared/events"
)

// startFunctions reads s.yaml with t.Env, builds and registers its functions and wires their
// triggers into the router.
func (t *Twin) startFunctions(ctx context.Context) error {
	path := t.opts.SYAML
	if path == "" {
		path = filepath.Join(t.repo, "s.yaml")
	}
	f, err := sconfig.ParseFile(path, sconfig.Vars{Env: t.Env, Config: map[string]string{"AccountID": t.KMS.AccountID}})
	if err != nil {
		return fmt.Errorf("twin: %w", err)
	}
	if err := f.Validate(); err != nil {
		return fmt.Errorf("twin: %s: %w", path, err)
	}
	t.SYAML = f
	t.FC = fc.NewSupervisor(fc.Options{
		Region: t.KMS.Region, AccountID: t.KMS.AccountID,
		Credentials: fc.Credentials{AccessKeyID: t.FunctionCredential.AccessKeyID,
			AccessKeySecret: t.FunctionCredential.AccessKeySecret, SecurityToken: t.FunctionCredential.SecurityToken},
		AsyncRetryDelay: t.opts.AsyncRetryDelay,
		LogOutput:       t.opts.FunctionLog,
	})
	for _, fn := range f.Functions() {
		bin, err := t.binary(ctx, fn)
		if err != nil {
			return err
		}
		timeout := fn.EffectiveTimeout()
		if d, ok := lookup(t.opts.Timeouts, fn); ok {
			timeout = d
		}
		reg := fc.Function{Name: fn.FunctionName, Handler: fn.Handler, Binary: bin, Env: fn.EnvironmentVariables,
			Timeout: timeout, MemoryMB: fn.MemorySize, MaxInstances: t.opts.MaxInstances}
		if fn.AsyncInvokeConfig != nil {
			reg.AsyncRetries = fn.AsyncInvokeConfig.MaxAsyncRetryAttempts
		}
		if err := t.FC.Register(reg); err != nil {
			return fmt.Errorf("twin: function %s: %w", fn.FunctionName, err)
		}
		tf := Function{Resource: fn.Resource, Name: fn.FunctionName, Binary: bin, Timeout: timeout}
		for _, tr := range fn.Triggers {
			wired, err := t.wireTrigger(fn.FunctionName, tr)
			if err != nil {
				return err
			}
			if wired {
				tf.Triggers = append(tf.Triggers, tr.TriggerName)
			}
		}
		t.Functions = append(t.Functions, tf)
	}
	return nil
}

func lookup[V any](m map[string]V, fn sconfig.Function) (V, bool) {
	if v, ok := m[fn.FunctionName]; ok {
		return v, true
	}
	v, ok := m[fn.Resource]
	return v, ok
}

// wireTrigger adds an eventbridge trigger as a router rule and a timer trigger as a router timer.
// A disabled eventbridge trigger is not wired (false); a disabled timer is added disabled.
func (t *Twin) wireTrigger(function string, tr sconfig.Trigger) (bool, error) {
	switch tr.TriggerType {
	case sconfig.TriggerEventBridge:
		c, err := tr.EventBridge()
		if err != nil {
			return false, fmt.Errorf("twin: trigger %s: %w", tr.TriggerName, err)
		}
		if !c.TriggerEnable {
			return false, nil
		}
		if err := t.Router.AddRule(tr.TriggerName, c.EventRuleFilterPattern, t.target(function, tr.TriggerName, c.AsyncInvocationType)); err != nil {
			return false, fmt.Errorf("twin: trigger %s: %w", tr.TriggerName, err)
		}
		return true, nil
	case sconfig.TriggerTimer:
		c, err := tr.Timer()
		if err != nil {
			return false, fmt.Errorf("twin: trigger %s: %w", tr.TriggerName, err)
		}
		// Timer runs are asynchronous invocations, retried on failure.
		err = t.Router.AddTimer(eventbridge.Timer{Name: tr.TriggerName, Payload: c.Payload, Disabled: !c.Enable,
			Target: t.target(function, tr.TriggerName, true)})
		if err != nil {
			return false, fmt.Errorf("twin: trigger %s: %w", tr.TriggerName, err)
		}
		t.timers = append(t.timers, tr.TriggerName)
		return true, nil
	default:
		return false, fmt.Errorf("twin: trigger %s: type %q is not supported", tr.TriggerName, tr.TriggerType)
	}
}

// target invokes function with each payload: synchronously, or asynchronously with FC's retries
// (waiting for the last attempt). The invocation fails when the (last) attempt did.
func (t *Twin) target(function, trigger string, async bool) eventbridge.Target {
	return func(ctx context.Context, payload []byte) error {
		var results []fc.Result
		if async {
			inv, err := t.FC.InvokeAsync(function, payload)
			if err != nil {
				return fmt.Errorf("invoke %s: %w", function, err)
			}
			if results, err = inv.Wait(ctx); err != nil {
				return fmt.Errorf("invoke %s: %w", function, err)
			}
		} else {
			r, err := t.FC.Invoke(ctx, function, payload)
			if err != nil {
				return fmt.Errorf("invoke %s: %w", function, err)
			}
			results = []fc.Result{r}
		}
		c, _ := ctx.Value(collectorKey{}).(*collector)
		for _, r := range results {
			inv := Invocation{Function: function, Trigger: trigger, Payload: payload, Result: r}
			t.record(inv)
			if c != nil {
				c.mu.Lock()
				c.calls = append(c.calls, inv)
				c.mu.Unlock()
			}
		}
		if len(results) == 0 {
			return fmt.Errorf("invoke %s: no attempt was made", function)
		}
		if last := results[len(results)-1]; last.Error != nil {
			return fmt.Errorf("function %s (request %s): %w", function, last.RequestID, last.Error)
		}
		return nil
	}
}

// Timers returns the names of the timer triggers, in s.yaml order.
func (t *Twin) Timers() []string { return append([]string(nil), t.timers...) }

// collector gathers the invocations one Fire or Publish caused; it travels in the context the
// router hands to the targets.
type collector struct {
	mu    sync.Mutex
	calls []Invocation
}

type collectorKey struct{}

func collect(ctx context.Context) (context.Context, *collector) {
	c := &collector{}
	return context.WithValue(ctx, collectorKey{}, c), c
}

func (c *collector) list() []Invocation {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Invocation(nil), c.calls...)
}

// Timer triggers of s.yaml the twin fires by name.
const (
	// OffPeakTimer runs jobs inside the window.
	OffPeakTimer = "offpeak"
	// WatchTimer fires all day: the checks, and the jobs in immediate mode.
	WatchTimer = "watch"
)

// Tick fires s.yaml's off-peak timer (OffPeakTimer) with triggerTime, as Function Compute would at
// that instant, and returns the attempts of the asynchronous invocation (retries included); the
// error is the last attempt's.
func (t *Twin) Tick(ctx context.Context, triggerTime time.Time) ([]Invocation, error) {
	return t.Fire(ctx, OffPeakTimer, triggerTime)
}

// Watch fires s.yaml's all-day timer (WatchTimer) with triggerTime.
func (t *Twin) Watch(ctx context.Context, triggerTime time.Time) ([]Invocation, error) {
	return t.Fire(ctx, WatchTimer, triggerTime)
}

// Fire fires the named timer trigger with triggerTime and returns its invocations.
func (t *Twin) Fire(ctx context.Context, timer string, triggerTime time.Time) ([]Invocation, error) {
	ctx, c := collect(ctx)
	err := t.Router.Fire(ctx, timer, triggerTime)
	return c.list(), err
}

// Publish publishes a CloudEvent on the router, as EventBridge receives one from a service,
// waits for its deliveries and returns the invocations it caused.
func (t *Twin) Publish(ctx context.Context, ev events.CloudEvent) (eventbridge.Delivery, []Invocation, error) {
	ctx, c := collect(ctx)
	d, err := t.Router.Publish(ctx, ev)
	return d, c.list(), err
}

// Invoke invokes a function synchronously with payload, outside any trigger.
func (t *Twin) Invoke(ctx context.Context, function string, payload []byte) (Invocation, error) {
	r, err := t.FC.Invoke(ctx, function, payload)
	if err != nil {
		return Invocation{}, fmt.Errorf("twin: %w", err)
	}
	c := Invocation{Function: function, Payload: payload, Result: r}
	t.record(c)
	return c, nil
}

// buildPackage matches the package a pre-deploy hook builds.
var buildPackage = regexp.MustCompile(`\./functions/[A-Za-z0-9_\-/]+`)

// functionPackage finds the Go package a function is built from: the ./functions/<name> its
// pre-deploy hook builds, else ./functions/<resource key>.
func functionPackage(fn sconfig.Function) string {
	for _, a := range fn.PreDeploy {
		if m := buildPackage.FindString(a.Run); m != "" {
			return m
		}
	}
	return "./functions/" + fn.Resource
}

// binary returns the function's executable: a prebuilt one from Options.Binaries, else one built
// from its package into the twin's directory as code/<handler>.
func (t *Twin) binary(ctx context.Context, fn sconfig.Function) (string, error) {
	if b, ok := lookup(t.opts.Binaries, fn); ok {
		return filepath.Abs(b)
	}
	if fn.Handler == "" || strings.ContainsAny(fn.Handler, `/\`) {
		return "", fmt.Errorf("twin: function %s: handler %q is not an executable name", fn.FunctionName, fn.Handler)
	}
	out := filepath.Join(t.dir, "code", fn.Resource, fn.Handler)
	pkg := functionPackage(fn)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = t.repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("twin: build %s (%s): %w\n%s", fn.FunctionName, pkg, err, b)
	}
	return out, nil
}
