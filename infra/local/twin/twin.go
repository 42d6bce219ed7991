package twin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/cs"
	"github.com/rekey-dev/rekey/infra/local/eventbridge"
	"github.com/rekey-dev/rekey/infra/local/fc"
	"github.com/rekey-dev/rekey/infra/local/kmsapi"
	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/infra/local/sconfig"
	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/state"
)

// Defaults of Options fields left zero.
const (
	// DefaultClusterID is the ACK cluster ID the twin's control plane stands for.
	DefaultClusterID = "c0twin0local0cluster"
	// FunctionRole is the RAM role the functions' STS credential is issued for.
	FunctionRole = "rekey-function"
	// DefaultWindow and DefaultTimezone are the off-peak window the twin configures.
	DefaultWindow   = "01:00-05:00"
	DefaultTimezone = "Asia/Shanghai"
)

// Options configure Start. The zero value starts the twin of the repository that contains the
// working directory, with its s.yaml and functions.
type Options struct {
	// Repo is the repository root (s.yaml, functions/, infra/rbac/). Default: the directory of
	// the go.mod of module github.com/rekey-dev/rekey at or above the working directory.
	Repo string
	// SYAML is the s.yaml to run (default Repo/s.yaml).
	SYAML string
	// Binaries map a function (functionName or resource key) to a prebuilt executable; the
	// others are built from their ./functions/<name> package (CGO off, for this machine).
	Binaries map[string]string
	// ClusterID is the ACK cluster ID of the control plane (default DefaultClusterID).
	ClusterID string
	// Env overrides or adds values of ${env('X')} in s.yaml (see Twin.Env for the defaults).
	Env map[string]string
	// Timeouts override a function's s.yaml timeout (keyed by functionName or resource key).
	Timeouts map[string]time.Duration
	// MaxInstances bounds each function's concurrent processes (0: fc.DefaultMaxInstances).
	MaxInstances int
	// AsyncRetryDelay separates async attempts (0: 200ms, shorter than FC's, to keep tests fast).
	AsyncRetryDelay time.Duration
	// FunctionLog, when set, receives every line the functions print, prefixed "[name] ".
	FunctionLog io.Writer
	// ControlPlaneLog, when set, receives etcd and kube-apiserver output (default: files in the
	// control plane's directory).
	ControlPlaneLog io.Writer
	// PluginLog, when set, receives the KMS v2 plugin's log (kmsstack.Options.PluginLog).
	PluginLog io.Writer
	// BinDir holds etcd and kube-apiserver (see controlplane.Options.BinDir).
	BinDir string

	// Single runs the kinder twin: one kube-apiserver whose KMS plugin reports the key version ID
	// as its key_id (rekey's own plugin). By default the twin is shaped like ACK Pro's managed
	// control plane: Replicas kube-apiservers on one etcd behind a load balancer that pins each
	// connection to one replica, each with its own KMS v2 plugin whose key_id is an opaque string
	// (not the version ID) and which adopts a new key version AdoptSpread after the previous
	// replica's plugin; etcd is never given to rekey (only the tests' own assertions read it).
	Single bool
	// Replicas is the number of kube-apiserver replicas of the ACK-shaped twin (default 2).
	Replicas int
	// NoAPF leaves rekey's API Priority and Fairness objects (APFFile) out: rekey's requests are
	// then classified like any other client's, as on a cluster where they were not applied.
	NoAPF bool
	// Users are more token users of the control plane, besides the functions' (controlplane.User).
	Users []controlplane.User
	// AdoptSpread separates the replicas' plugins adopting a new key version: replica i's plugin
	// reports it i×AdoptSpread after it first sees it (default DefaultAdoptSpread; negative: 0).
	AdoptSpread time.Duration
}

// DefaultAdoptSpread is how much later each replica of the ACK-shaped twin adopts a new key
// version than the previous one (plus each API server's own Status poll): tens of seconds, as
// replicas polling KMS on their own clocks do.
const DefaultAdoptSpread = 30 * time.Second

// replicas returns the number of kube-apiservers and the plugin instances of the twin's shape.
func (o Options) plugins() (int, []kmsstack.PluginOptions) {
	if o.Single {
		return 1, nil
	}
	n := o.Replicas
	if n <= 0 {
		n = 2
	}
	spread := o.AdoptSpread
	if spread == 0 {
		spread = DefaultAdoptSpread
	}
	spread = max(spread, 0)
	out := make([]kmsstack.PluginOptions, n)
	for i := range out {
		out[i] = kmsstack.PluginOptions{KeyIDFormat: kmsstack.KeyIDOpaque, AdoptAfter: time.Duration(i) * spread}
	}
	return n, out
}

// Function is one function of s.yaml as the twin runs it.
type Function struct {
	// Resource is the s.yaml resource key; Name the functionName.
	Resource, Name string
	// Binary is the executable the supervisor runs.
	Binary string
	// Timeout is the deadline of each invocation.
	Timeout time.Duration
	// Triggers are the trigger names routed to it.
	Triggers []string
}

// Invocation is one function invocation made through a trigger or Invoke.
type Invocation struct {
	// Function is the functionName; Trigger the trigger name ("" for Invoke).
	Function, Trigger string
	// Payload is what the function got.
	Payload []byte
	// Result is the outcome.
	Result fc.Result
}

// Twin is the running local cloud. Its exported fields are read-only.
type Twin struct {
	// ClusterID names the control plane as an ACK cluster.
	ClusterID string
	// Cluster is the control plane (etcd + kube-apiserver), encrypting Secrets through KMS.
	Cluster *controlplane.Cluster
	// KMS is the KMS stand-in and the KMS v2 plugin.
	KMS *kmsstack.Stack
	// Router is the EventBridge twin: s.yaml's rules and timers.
	Router *eventbridge.Router
	// CS is the Container Service stand-in, listening on CSEndpoint (host:port, HTTP).
	CS         *cs.Server
	CSEndpoint string
	// FC runs the functions.
	FC *fc.Supervisor
	// Webhook receives the alerts.
	Webhook *Webhook
	// SYAML is s.yaml as read with Env.
	SYAML *sconfig.File
	// Env answered ${env('X')}: REKEY_TARGETS (ClusterID=the KMS key), REKEY_REGION,
	// REKEY_ACCOUNT_ID, REKEY_KMS_ENDPOINT and REKEY_ACTIONTRAIL_ENDPOINT (the KMS stand-in),
	// REKEY_CS_ENDPOINT, REKEY_ENDPOINT_SCHEME=HTTP, REKEY_WEBHOOK_URL (Webhook.URL), REKEY_WINDOW
	// (DefaultWindow), REKEY_TIMEZONE (DefaultTimezone), REKEY_SETTLE (0s), REKEY_GATE_SETTLE (20s), REKEY_RUN_MODE
	// (offpeak), REKEY_STRATEGY (auto), REKEY_CONCURRENCY (16); REGION, VPC_ID, VSWITCH_ID and
	// SECURITY_GROUP_ID for s.yaml itself; then Options.Env.
	Env map[string]string
	// Functions are the registered functions, in s.yaml resource order.
	Functions []Function
	// FunctionCredential is the functions' role credential (FC context and ALIBABA_CLOUD_*).
	FunctionCredential kmsapi.Credential

	opts      Options
	repo      string
	dir       string
	bridge    *eventbridge.KMSBridge
	muted     atomic.Bool
	csSrv     *http.Server
	csDone    chan struct{}
	timers    []string
	stopOnce  sync.Once
	mu        sync.Mutex
	calls     []Invocation
	bridgeErr []error
}

// Start starts the twin: KMS stack, control plane with the functions' RBAC and rekey's APF objects, CS stand-in, webhook,
// EventBridge router and the functions of s.yaml (building them first). ctx bounds the start-up.
// On error everything started is stopped.
func Start(ctx context.Context, opts Options) (_ *Twin, err error) {
	t := &Twin{opts: opts, ClusterID: opts.ClusterID}
	if t.ClusterID == "" {
		t.ClusterID = DefaultClusterID
	}
	if t.opts.AsyncRetryDelay <= 0 {
		t.opts.AsyncRetryDelay = 200 * time.Millisecond
	}
	defer func() {
		if err != nil {
			_ = t.Stop()
		}
	}()
	if t.repo, err = repoRoot(opts.Repo); err != nil {
		return nil, err
	}
	if t.dir, err = os.MkdirTemp("", "rekey-twin-"); err != nil {
		return nil, fmt.Errorf("twin: %w", err)
	}
	if t.FunctionCredential, err = functionCredential(); err != nil {
		return nil, err
	}
	token, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	if t.Webhook, err = startWebhook(token); err != nil {
		return nil, fmt.Errorf("twin: %w", err)
	}

	t.Router = eventbridge.NewRouter(eventbridge.Options{AccountID: kmsapi.DefaultAccountID, Region: kmsapi.DefaultRegion})
	t.bridge = eventbridge.NewKMSBridge(t.Router, eventbridge.KMSBridgeOptions{OnError: func(rec kmsapi.Record, err error) {
		t.mu.Lock()
		t.bridgeErr = append(t.bridgeErr, fmt.Errorf("%s %s: %w", rec.EventName, rec.EventID, err))
		t.mu.Unlock()
	}})
	if err := os.Mkdir(filepath.Join(t.dir, "kms"), 0o700); err != nil {
		return nil, fmt.Errorf("twin: %w", err)
	}
	replicas, plugins := opts.plugins()
	t.KMS, err = kmsstack.Start(ctx, kmsstack.Options{
		Dir:         filepath.Join(t.dir, "kms"),
		Credentials: []kmsapi.Credential{t.FunctionCredential},
		PluginLog:   opts.PluginLog,
		Plugins:     plugins,
		OnRecord: func(rec kmsapi.Record) {
			if !t.muted.Load() {
				t.bridge.OnRecord(rec)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("twin: %w", err)
	}
	providers := t.KMS.Providers()
	t.Cluster, err = controlplane.Start(ctx, controlplane.Options{
		BinDir:     opts.BinDir,
		Encryption: &controlplane.Encryption{Providers: []controlplane.Provider{providers[0], controlplane.Identity()}},
		Replicas:   replicas,
		ReplicaEncryption: func(i int) *controlplane.Encryption {
			return &controlplane.Encryption{Providers: []controlplane.Provider{providers[i], controlplane.Identity()}}
		},
		Users: append([]controlplane.User{{Name: FunctionUser}}, opts.Users...),
		Log:   opts.ControlPlaneLog,
	})
	if err != nil {
		return nil, fmt.Errorf("twin: %w", err)
	}
	admin, err := t.AdminClient()
	if err != nil {
		return nil, err
	}
	if err := ApplyRBAC(ctx, admin, filepath.Join(t.repo, RBACFile), FunctionRoleID); err != nil {
		return nil, fmt.Errorf("twin: %w", err)
	}
	if !opts.NoAPF {
		if err := ApplyRBAC(ctx, admin, filepath.Join(t.repo, APFFile), FunctionRoleID); err != nil {
			return nil, fmt.Errorf("twin: %w", err)
		}
	}
	if err := t.startCS(); err != nil {
		return nil, err
	}
	t.Env = t.defaultEnv()
	for k, v := range opts.Env {
		t.Env[k] = v
	}
	if err := t.startFunctions(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *Twin) defaultEnv() map[string]string {
	return map[string]string{
		config.EnvTargets:             t.ClusterID + "=" + t.KMS.KeyID,
		config.EnvRegion:              t.KMS.Region,
		config.EnvAccountID:           t.KMS.AccountID,
		config.EnvKMSEndpoint:         t.KMS.Endpoint,
		config.EnvActionTrailEndpoint: t.KMS.Endpoint,
		config.EnvCSEndpoint:          t.CSEndpoint,
		config.EnvEndpointScheme:      "HTTP",
		config.EnvWebhookURL:          t.Webhook.URL,
		config.EnvWindow:              DefaultWindow,
		config.EnvTimezone:            DefaultTimezone,
		config.EnvSettle:              "0s",
		// The gate's settle, used only without direct evidence (the first job on a fresh twin,
		// whose key version is seconds old): short, so that tests do not wait 9 minutes.
		config.EnvGateSettle:  "20s",
		config.EnvRunMode:     string(config.RunOffPeak),
		config.EnvStrategy:    string(config.StrategyAuto),
		config.EnvConcurrency: "16",
		// What s.yaml itself asks of the deployer (the VPC is not simulated).
		"REGION":            t.KMS.Region,
		"VPC_ID":            "vpc-twin",
		"VSWITCH_ID":        "vsw-twin",
		"SECURITY_GROUP_ID": "sg-twin",
	}
}

// startCS serves the CS stand-in with a kubeconfig of the control plane for FunctionUser.
func (t *Twin) startCS() error {
	srv, err := cs.NewServer(cs.Options{Credentials: []kmsapi.Credential{t.FunctionCredential}})
	if err != nil {
		return fmt.Errorf("twin: cs: %w", err)
	}
	path := filepath.Join(t.dir, "function.kubeconfig")
	if err := t.Cluster.WriteKubeconfig(FunctionUser, path); err != nil {
		return fmt.Errorf("twin: %w", err)
	}
	kc, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("twin: %w", err)
	}
	// The kubeconfig lives only in the CS stand-in, as on ACK.
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("twin: %w", err)
	}
	if err := srv.Register(t.ClusterID, string(kc)); err != nil {
		return fmt.Errorf("twin: cs: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("twin: cs: listen: %w", err)
	}
	t.CS, t.CSEndpoint = srv, ln.Addr().String()
	t.csSrv = &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	t.csDone = make(chan struct{})
	go func() {
		defer close(t.csDone)
		_ = t.csSrv.Serve(ln)
	}()
	return nil
}

// Stop stops everything Start started, in reverse order, and removes the twin's files.
func (t *Twin) Stop() error {
	var errs []error
	t.stopOnce.Do(func() {
		if t.FC != nil {
			errs = append(errs, t.FC.Close())
		}
		if t.bridge != nil {
			t.bridge.Close()
		}
		if t.csSrv != nil {
			_ = t.csSrv.Close()
			<-t.csDone
		}
		if t.Cluster != nil {
			errs = append(errs, t.Cluster.Stop())
		}
		if t.KMS != nil {
			t.KMS.Stop()
		}
		if t.Webhook != nil {
			t.Webhook.close()
		}
		if t.dir != "" {
			errs = append(errs, os.RemoveAll(t.dir))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("twin: stop: %w", err)
	}
	return nil
}

// AdminClient is a clientset of the control plane as its admin (no client-side rate limit).
func (t *Twin) AdminClient() (*kubernetes.Clientset, error) {
	cfg := t.Cluster.RestConfig(controlplane.AdminUser)
	cfg.QPS, cfg.Burst = -1, 0
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("twin: admin client: %w", err)
	}
	return c, nil
}

// State is the functions' state store of the twin's cluster, read as the admin.
func (t *Twin) State() (*state.Store, error) {
	admin, err := t.AdminClient()
	if err != nil {
		return nil, err
	}
	s, err := state.New(admin, t.ClusterID)
	if err != nil {
		return nil, fmt.Errorf("twin: state: %w", err)
	}
	return s, nil
}

// MuteEvents stops (true) or resumes (false) publishing the KMS stand-in's records: what KMS does
// while muted reaches no function, as an automatic rotation that emits no event.
func (t *Twin) MuteEvents(muted bool) { t.muted.Store(muted) }

// FlushEvents waits until every KMS record so far has been published and its deliveries (the
// functions they invoke) have finished.
func (t *Twin) FlushEvents(ctx context.Context) error {
	if err := t.bridge.Flush(ctx); err != nil {
		return fmt.Errorf("twin: %w", err)
	}
	return nil
}

// BridgeErrors returns the errors of publishing KMS records so far (a function that failed on an
// event it was delivered, for one).
func (t *Twin) BridgeErrors() []error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]error(nil), t.bridgeErr...)
}

// Rotate creates a new key version through the SDK (CreateKeyVersion), waits until its event has
// been delivered to every matching function, and returns the new version.
func (t *Twin) Rotate(ctx context.Context) (string, error) {
	v, err := t.KMS.Rotate()
	if err != nil {
		return "", fmt.Errorf("twin: %w", err)
	}
	return v, t.FlushEvents(ctx)
}

// SetKeyEnabled calls EnableKey or DisableKey through the SDK and waits for the event's delivery.
func (t *Twin) SetKeyEnabled(ctx context.Context, enabled bool) error {
	if err := t.KMS.SetEnabled(enabled); err != nil {
		return fmt.Errorf("twin: %w", err)
	}
	return t.FlushEvents(ctx)
}

// Invocations returns every invocation made through the twin's triggers and Invoke, in the order
// they finished.
func (t *Twin) Invocations() []Invocation {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Invocation(nil), t.calls...)
}

// FunctionKMSCalls counts the KMS and ActionTrail API calls made with the functions' credential,
// by action.
func (t *Twin) FunctionKMSCalls() map[string]int {
	out := map[string]int{}
	for _, r := range t.KMS.Server().Records() {
		if r.UserIdentity.AccessKeyID == t.FunctionCredential.AccessKeyID {
			out[r.EventName]++
		}
	}
	return out
}

// WindowTime returns the first whole minute at or after after that lies inside the off-peak
// window the functions are configured with (REKEY_WINDOW in REKEY_TIMEZONE), in UTC.
func (t *Twin) WindowTime(after time.Time) (time.Time, error) {
	loc, err := time.LoadLocation(t.Env[config.EnvTimezone])
	if err != nil {
		return time.Time{}, fmt.Errorf("twin: %s: %w", config.EnvTimezone, err)
	}
	w, err := config.ParseWindow(t.Env[config.EnvWindow], loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("twin: %s: %w", config.EnvWindow, err)
	}
	m := after.UTC().Truncate(time.Minute)
	if m.Before(after) {
		m = m.Add(time.Minute)
	}
	for range 2 * 24 * 60 {
		if w.Contains(m) {
			return m, nil
		}
		m = m.Add(time.Minute)
	}
	return time.Time{}, fmt.Errorf("twin: no minute inside window %s", w)
}

// OutsideWindowTime returns the first whole minute at or after after that lies outside the
// off-peak window, in UTC.
func (t *Twin) OutsideWindowTime(after time.Time) (time.Time, error) {
	loc, err := time.LoadLocation(t.Env[config.EnvTimezone])
	if err != nil {
		return time.Time{}, fmt.Errorf("twin: %s: %w", config.EnvTimezone, err)
	}
	w, err := config.ParseWindow(t.Env[config.EnvWindow], loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("twin: %s: %w", config.EnvWindow, err)
	}
	m := after.UTC().Truncate(time.Minute).Add(time.Minute)
	for range 2 * 24 * 60 {
		if !w.Contains(m) {
			return m, nil
		}
		m = m.Add(time.Minute)
	}
	return time.Time{}, fmt.Errorf("twin: window %s covers the whole day", w)
}

// Credentials returns every credential of the twin that must never appear in a function's output,
// by a description: the functions' AccessKey secret and STS token, the kubeconfig token the CS
// stand-in hands out, the admin's bearer token, the KMS admin's and the plugin's secrets, the
// webhook's token.
func (t *Twin) Credentials() map[string]string {
	out := map[string]string{
		"function AccessKey secret":  t.FunctionCredential.AccessKeySecret,
		"function STS token":         t.FunctionCredential.SecurityToken,
		"KMS admin AccessKey secret": t.KMS.Admin.AccessKeySecret,
		"plugin AccessKey secret":    t.KMS.PluginCreds.AccessKeySecret,
		"plugin STS token":           t.KMS.PluginCreds.SecurityToken,
		"webhook token":              t.Webhook.Token,
	}
	if tok, ok := t.Cluster.Token(FunctionUser); ok {
		out["function kubeconfig bearer token"] = tok
	}
	if tok, ok := t.Cluster.Token(controlplane.AdminUser); ok {
		out["admin bearer token"] = tok
	}
	return out
}

// Output is everything the functions said: each function's log, each invocation's response and
// error, each alert posted to the webhook, by a description.
func (t *Twin) Output() map[string][]byte {
	out := map[string][]byte{}
	for _, f := range t.Functions {
		logs, _ := t.FC.Logs(f.Name)
		out["log of "+f.Name] = logs
	}
	for i, c := range t.Invocations() {
		name := fmt.Sprintf("invocation %d of %s (%s)", i, c.Function, c.Result.RequestID)
		out[name+" response"] = c.Result.Body
		if c.Result.Error != nil {
			out[name+" error"] = []byte(c.Result.Error.Message + " " + c.Result.Error.Type + " " + string(c.Result.Error.StackTrace))
		}
	}
	for i, a := range t.Webhook.Alerts() {
		out[fmt.Sprintf("alert %d", i)] = a.Body
	}
	return out
}

func (t *Twin) record(c Invocation) {
	t.mu.Lock()
	t.calls = append(t.calls, c)
	t.mu.Unlock()
}

func functionCredential() (kmsapi.Credential, error) {
	id, err := randomHex(8)
	if err != nil {
		return kmsapi.Credential{}, err
	}
	secret, err := randomHex(16)
	if err != nil {
		return kmsapi.Credential{}, err
	}
	token, err := randomHex(32)
	if err != nil {
		return kmsapi.Credential{}, err
	}
	return kmsapi.Credential{
		AccessKeyID: "STS.twin" + id, AccessKeySecret: secret, SecurityToken: "CAIS" + token,
		Identity: kmsapi.Identity{Type: kmsapi.IdentityAssumedRole, AccountID: kmsapi.DefaultAccountID, RoleName: FunctionRole,
			RoleID: FunctionRoleID, SessionName: "fc-function", PrincipalID: FunctionRoleID + ":fc-function"},
	}, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("twin: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// repoRoot returns dir, or the directory of rekey's go.mod at or above the working directory.
// RepoRoot returns dir made absolute, or ("") the directory of the go.mod of module
// github.com/rekey-dev/rekey at or above the working directory.
func RepoRoot(dir string) (string, error) { return repoRoot(dir) }

func repoRoot(dir string) (string, error) {
	if dir != "" {
		return filepath.Abs(dir)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("twin: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/rekey-dev/rekey\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("twin: no rekey go.mod at or above %s: set Options.Repo", wd)
		}
	}
}
