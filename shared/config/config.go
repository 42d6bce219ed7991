package config

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rekey-dev/rekey/shared/keyref"
	"github.com/rs/zerolog"
)

// Variable names, the same in s.yaml, the README and here.
const (
	EnvTargets             = "REKEY_TARGETS"
	EnvRegion              = "REKEY_REGION"
	EnvAccountID           = "REKEY_ACCOUNT_ID"
	EnvWindow              = "REKEY_WINDOW"
	EnvTimezone            = "REKEY_TIMEZONE"
	EnvSettle              = "REKEY_SETTLE"
	EnvGateSettle          = "REKEY_GATE_SETTLE"
	EnvRunMode             = "REKEY_RUN_MODE"
	EnvStrategy            = "REKEY_STRATEGY"
	EnvConcurrency         = "REKEY_CONCURRENCY"
	EnvWebhookURL          = "REKEY_WEBHOOK_URL"
	EnvKMSEndpoint         = "REKEY_KMS_ENDPOINT"
	EnvCSEndpoint          = "REKEY_CS_ENDPOINT"
	EnvActionTrailEndpoint = "REKEY_ACTIONTRAIL_ENDPOINT"
	EnvEndpointScheme      = "REKEY_ENDPOINT_SCHEME"
	EnvLogLevel            = "REKEY_LOG_LEVEL"
	// EnvKubeconfigPrefix + KubeconfigSuffix(clusterID) names a cluster's optional kubeconfig path.
	EnvKubeconfigPrefix = "REKEY_KUBECONFIG_"
)

// Vars lists every fixed variable name Load reads (REKEY_KUBECONFIG_<CLUSTERID> comes on top, one per
// target).
var Vars = []string{
	EnvTargets, EnvRegion, EnvAccountID, EnvWindow, EnvTimezone, EnvSettle, EnvGateSettle, EnvRunMode, EnvStrategy,
	EnvConcurrency, EnvWebhookURL, EnvKMSEndpoint, EnvCSEndpoint, EnvActionTrailEndpoint, EnvEndpointScheme,
	EnvLogLevel,
}

// Defaults.
const (
	DefaultWindow   = "01:00-05:00"
	DefaultTimezone = "Asia/Shanghai"
	DefaultSettle   = 2 * time.Minute
	// DefaultGateSettle is upstream's 3 + N + M minutes (the 3 min a DEK may still be written with,
	// N = 1 for the Status poll, M = 5 of margin), as shared/adoption.DefaultSettle.
	DefaultGateSettle  = 9 * time.Minute
	MaxGateSettle      = time.Hour
	DefaultConcurrency = 64
	MaxConcurrency     = 256
	MaxSettle          = 24 * time.Hour
)

// RunMode says when the rotation function runs jobs.
type RunMode string

// Run modes.
const (
	// RunOffPeak records jobs; the off-peak timer runs them inside the window.
	RunOffPeak RunMode = "offpeak"
	// RunImmediate also runs jobs whose notBefore has passed from the rotation function.
	RunImmediate RunMode = "immediate"
)

// Strategy is the engine's rewrite strategy (as rekey run --strategy).
type Strategy string

// Strategies.
const (
	StrategyAuto     Strategy = "auto"
	StrategyRewrite  Strategy = "rewrite"
	StrategyAnnotate Strategy = "annotate"
)

// Target is one watched cluster and the KMS key its Secrets are encrypted with.
type Target struct {
	// Cluster is the ACK cluster ID.
	Cluster string `json:"cluster"`
	// Key is the key as written in REKEY_TARGETS: an ID, alias/<name> or an ARN.
	Key string `json:"key"`
	// Ref is Key parsed.
	Ref keyref.Ref `json:"-"`
}

// Own is what the function knows about itself (FC_REGION, FC_ACCOUNT_ID or the FC context): the
// defaults of REKEY_REGION and REKEY_ACCOUNT_ID.
type Own struct {
	Region, AccountID string
}

// Config is the validated configuration. It is a plain value, safe to share read-only.
type Config struct {
	// Targets are the watched clusters, in REKEY_TARGETS order. Several may share a key.
	Targets []Target `json:"targets"`
	// Region and AccountID are the region and account whose events count.
	Region    string `json:"region"`
	AccountID string `json:"accountId"`
	// Window is the off-peak window, in Location.
	Window Window `json:"window"`
	// Settle is the delay between a rotation event and the earliest run of its jobs.
	Settle time.Duration `json:"settle"`
	// GateSettle is how long after a rotation the adoption gate waits when no direct evidence of
	// adoption is available (no canary, no usable /metrics series).
	GateSettle  time.Duration `json:"gateSettle"`
	RunMode     RunMode       `json:"runMode"`
	Strategy    Strategy      `json:"strategy"`
	Concurrency int           `json:"concurrency"`
	// Webhook is where alerts go (zero when REKEY_WEBHOOK_URL is unset: log only).
	Webhook Webhook `json:"webhook"`
	// KMSEndpoint, CSEndpoint and ActionTrailEndpoint are host[:port] (defaults: the region's VPC
	// endpoints).
	KMSEndpoint         string `json:"kmsEndpoint"`
	CSEndpoint          string `json:"csEndpoint"`
	ActionTrailEndpoint string `json:"actionTrailEndpoint"`
	// EndpointScheme is HTTPS, or HTTP when every endpoint is a loopback address (the local twin).
	EndpointScheme string `json:"endpointScheme"`
	// LogLevel is the functions' log level: debug (one line per object), info (default), warn or
	// error.
	LogLevel zerolog.Level `json:"logLevel"`
	// Kubeconfigs maps a cluster ID to a kubeconfig path from REKEY_KUBECONFIG_<CLUSTERID>; clusters
	// without one get theirs from CS DescribeClusterUserKubeconfig.
	Kubeconfigs map[string]string `json:"kubeconfigs,omitempty"`
}

// Target returns the target of a cluster.
func (c Config) Target(cluster string) (Target, bool) {
	for _, t := range c.Targets {
		if t.Cluster == cluster {
			return t, true
		}
	}
	return Target{}, false
}

// String describes the configuration without secrets (the webhook is redacted).
func (c Config) String() string {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Sprintf("config: %v", err)
	}
	return string(b)
}

// KubeconfigVar returns the name of the variable holding a cluster's kubeconfig path:
// REKEY_KUBECONFIG_ + the cluster ID upper-cased, with every character other than a letter or a digit
// replaced by '_'.
func KubeconfigVar(cluster string) string {
	var b strings.Builder
	b.WriteString(EnvKubeconfigPrefix)
	for _, c := range cluster {
		switch {
		case c >= 'a' && c <= 'z':
			b.WriteRune(c - 'a' + 'A')
		case (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'):
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// Load reads and validates the configuration. getenv is os.Getenv in a function; own gives the
// defaults of REKEY_REGION and REKEY_ACCOUNT_ID. Every problem found is reported in one *Error.
func Load(getenv func(string) string, own Own) (Config, error) {
	var errs Error
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }
	c := Config{
		Region:    get(EnvRegion),
		AccountID: get(EnvAccountID),
	}

	if c.Region == "" {
		c.Region = own.Region
	}
	if c.Region == "" {
		errs.add(EnvRegion, "is not set and the function's own region is unknown", "set it to the region of the clusters and keys, e.g. cn-hangzhou")
	} else if !keyref.ValidRegion(c.Region) {
		errs.add(EnvRegion, fmt.Sprintf("%q is not a region ID", c.Region), "set it to a region ID such as cn-hangzhou")
	}
	if c.AccountID == "" {
		c.AccountID = own.AccountID
	}
	if c.AccountID == "" {
		errs.add(EnvAccountID, "is not set and the function's own account is unknown", "set it to the numeric Alibaba Cloud account ID that owns the keys")
	} else if !keyref.ValidAccount(c.AccountID) {
		errs.add(EnvAccountID, fmt.Sprintf("%q is not a numeric account ID", c.AccountID), "set it to the numeric Alibaba Cloud account ID that owns the keys")
	}

	c.Targets = parseTargets(get(EnvTargets), c.Region, c.AccountID, &errs)

	loc := time.UTC
	tz := get(EnvTimezone)
	if tz == "" {
		tz = DefaultTimezone
	}
	if l, err := time.LoadLocation(tz); err != nil || tz == "Local" {
		errs.add(EnvTimezone, fmt.Sprintf("%q is not an IANA time zone", tz), "set it to a zone name such as Asia/Shanghai or UTC")
	} else {
		loc = l
	}
	win := get(EnvWindow)
	if win == "" {
		win = DefaultWindow
	}
	if w, err := ParseWindow(win, loc); err != nil {
		errs.add(EnvWindow, err.Error(), "set it to HH:MM-HH:MM in REKEY_TIMEZONE, e.g. 01:00-05:00 (it may wrap midnight: 22:00-04:00)")
	} else {
		c.Window = w
	}

	c.Settle = DefaultSettle
	if s := get(EnvSettle); s != "" {
		d, err := time.ParseDuration(s)
		switch {
		case err != nil:
			errs.add(EnvSettle, fmt.Sprintf("%q is not a Go duration", s), "set it to a duration such as 2m or 90s")
		case d < 0 || d > MaxSettle:
			errs.add(EnvSettle, fmt.Sprintf("%s is out of range", d), "set it between 0s and 24h (default 2m)")
		default:
			c.Settle = d
		}
	}

	c.GateSettle = DefaultGateSettle
	if s := get(EnvGateSettle); s != "" {
		d, err := time.ParseDuration(s)
		switch {
		case err != nil:
			errs.add(EnvGateSettle, fmt.Sprintf("%q is not a Go duration", s), "set it to a duration such as 9m")
		case d < 0 || d > MaxGateSettle:
			errs.add(EnvGateSettle, fmt.Sprintf("%s is out of range", d), "set it between 0s and 1h (default 9m: 3 + N + M minutes)")
		default:
			c.GateSettle = d
		}
	}

	c.RunMode = RunOffPeak
	if s := get(EnvRunMode); s != "" {
		switch RunMode(s) {
		case RunOffPeak, RunImmediate:
			c.RunMode = RunMode(s)
		default:
			errs.add(EnvRunMode, fmt.Sprintf("%q is not a run mode", s), "set it to offpeak (default) or immediate")
		}
	}
	c.Strategy = StrategyAuto
	if s := get(EnvStrategy); s != "" {
		switch Strategy(s) {
		case StrategyAuto, StrategyRewrite, StrategyAnnotate:
			c.Strategy = Strategy(s)
		default:
			errs.add(EnvStrategy, fmt.Sprintf("%q is not a strategy", s), "set it to auto (default), rewrite or annotate")
		}
	}
	c.LogLevel = zerolog.InfoLevel
	if s := get(EnvLogLevel); s != "" {
		switch l, err := zerolog.ParseLevel(s); {
		case err == nil && l >= zerolog.DebugLevel && l <= zerolog.ErrorLevel:
			c.LogLevel = l
		default:
			errs.add(EnvLogLevel, fmt.Sprintf("%q is not a log level", s), "set it to debug (one line per object), info (default), warn or error")
		}
	}
	c.Concurrency = DefaultConcurrency
	if s := get(EnvConcurrency); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxConcurrency {
			errs.add(EnvConcurrency, fmt.Sprintf("%q is not a number of workers between 1 and %d", s, MaxConcurrency), fmt.Sprintf("set it to an integer from 1 to %d (default %d)", MaxConcurrency, DefaultConcurrency))
		} else {
			c.Concurrency = n
		}
	}

	if s := get(EnvWebhookURL); s != "" {
		w, err := ParseWebhook(s)
		if err != nil {
			errs.add(EnvWebhookURL, err.Error(), "set it to the https URL of the webhook (a DingTalk robot URL gets DingTalk's format), or unset it to log alerts only")
		} else {
			c.Webhook = w
		}
	}

	endpoints := []struct {
		name   string
		dst    *string
		prefix string
	}{
		{EnvKMSEndpoint, &c.KMSEndpoint, "kms-vpc"},
		{EnvCSEndpoint, &c.CSEndpoint, "cs-vpc"},
		{EnvActionTrailEndpoint, &c.ActionTrailEndpoint, "actiontrail-vpc"},
	}
	for _, e := range endpoints {
		s := get(e.name)
		if s == "" {
			*e.dst = e.prefix + "." + c.Region + ".aliyuncs.com"
			continue
		}
		if err := validEndpoint(s); err != nil {
			errs.add(e.name, err.Error(), "set it to host or host:port without a scheme or path, e.g. "+e.prefix+".cn-hangzhou.aliyuncs.com, or unset it for the region's VPC endpoint")
			continue
		}
		*e.dst = s
	}
	c.EndpointScheme = "HTTPS"
	if s := get(EnvEndpointScheme); s != "" {
		switch strings.ToUpper(s) {
		case "HTTPS":
		case "HTTP":
			var remote []string
			for _, e := range endpoints {
				if !isLoopback(*e.dst) {
					remote = append(remote, e.name)
				}
			}
			if len(remote) > 0 {
				errs.add(EnvEndpointScheme, "HTTP is allowed only when every endpoint is a loopback address, and "+strings.Join(remote, ", ")+" is not",
					"set it to HTTPS (default); HTTP is for the local twin, whose endpoints are 127.0.0.1:port")
			} else {
				c.EndpointScheme = "HTTP"
			}
		default:
			errs.add(EnvEndpointScheme, fmt.Sprintf("%q is not a scheme", s), "set it to HTTPS (default), or HTTP for loopback endpoints only")
		}
	}

	byVar := map[string]string{}
	for _, t := range c.Targets {
		name := KubeconfigVar(t.Cluster)
		if other, ok := byVar[name]; ok {
			errs.add(name, fmt.Sprintf("clusters %s and %s both map to this variable name", other, t.Cluster), "give those clusters distinct IDs in REKEY_TARGETS")
			continue
		}
		byVar[name] = t.Cluster
		if p := get(name); p != "" {
			if c.Kubeconfigs == nil {
				c.Kubeconfigs = map[string]string{}
			}
			c.Kubeconfigs[t.Cluster] = p
		}
	}

	if len(errs.Problems) > 0 {
		return Config{}, &errs
	}
	return c, nil
}

func parseTargets(s, region, account string, errs *Error) []Target {
	const fix = "set it to clusterId=keyId pairs separated by commas, e.g. c1a2b3=key-hzz6...,c4d5e6=alias/k8s (a key may be an ID, alias/<name> or an acs:kms ARN)"
	if s == "" {
		errs.add(EnvTargets, "is not set: no cluster to watch", fix)
		return nil
	}
	var out []Target
	seen := map[string]bool{}
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		cluster, key, ok := strings.Cut(entry, "=")
		cluster, key = strings.TrimSpace(cluster), strings.TrimSpace(key)
		switch {
		case entry == "":
			errs.add(EnvTargets, fmt.Sprintf("entry %d is empty", i+1), fix)
			continue
		case !ok || cluster == "" || key == "":
			errs.add(EnvTargets, fmt.Sprintf("entry %d (%q) is not clusterId=keyId", i+1, entry), fix)
			continue
		case !validClusterID(cluster):
			errs.add(EnvTargets, fmt.Sprintf("entry %d: %q is not a cluster ID", i+1, cluster), "use the ACK cluster ID (letters, digits, '-' and '_'), as shown in the console")
			continue
		case seen[cluster]:
			errs.add(EnvTargets, fmt.Sprintf("cluster %s is listed more than once", cluster), "list each cluster once: a cluster encrypts with one key")
			continue
		}
		ref, err := keyref.Parse(key)
		if err != nil {
			errs.add(EnvTargets, fmt.Sprintf("entry %d (cluster %s): %v", i+1, cluster, err), fix)
			continue
		}
		if ref.IsARN() && (ref.Region != region || ref.Account != account) {
			errs.add(EnvTargets, fmt.Sprintf("entry %d (cluster %s): the key ARN is in region %s, account %s, not REKEY_REGION %s, REKEY_ACCOUNT_ID %s", i+1, cluster, ref.Region, ref.Account, region, account),
				"use a key of the clusters' own region and account, or correct REKEY_REGION / REKEY_ACCOUNT_ID")
			continue
		}
		seen[cluster] = true
		out = append(out, Target{Cluster: cluster, Key: key, Ref: ref})
	}
	return out
}

func validClusterID(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
			return false
		}
	}
	return s != ""
}

// validEndpoint accepts host or host:port (port 1..65535), no scheme, path or user info.
func validEndpoint(s string) error {
	if strings.Contains(s, "://") || strings.ContainsAny(s, "/?#@ ") {
		return fmt.Errorf("%q is not host[:port]", s)
	}
	host, port := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		if p == "" {
			return fmt.Errorf("%q has an empty port", s)
		}
		host, port = h, p
	} else if strings.Count(s, ":") == 1 || strings.HasPrefix(s, "[") {
		return fmt.Errorf("%q is not host[:port]", s)
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: port %q is not 1..65535", s, port)
		}
	}
	if host == "" || len(host) > 253 {
		return fmt.Errorf("%q has no host", s)
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q: host %q is not a DNS name", s, host)
		}
		for _, c := range label {
			if !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-') {
				return fmt.Errorf("%q: host %q is not a DNS name", s, host)
			}
		}
	}
	return nil
}

// isLoopback reports whether an endpoint host (host or host:port) is localhost or a loopback IP.
func isLoopback(endpoint string) bool {
	host := endpoint
	if h, _, err := net.SplitHostPort(endpoint); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Problem is one thing wrong with the configuration.
type Problem struct {
	// Var is the variable at fault.
	Var string
	// Problem says what is wrong (never a secret value).
	Problem string
	// Fix says what to set.
	Fix string
}

// Error lists every problem Load found.
type Error struct {
	Problems []Problem
}

func (e *Error) add(v, problem, fix string) {
	e.Problems = append(e.Problems, Problem{Var: v, Problem: problem, Fix: fix})
}

// Error implements error: one line per problem, in the order found, each with its fix.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invalid rekey configuration (%d problem", len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteByte('s')
	}
	b.WriteString("):")
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  %s: %s; fix: %s", p.Var, p.Problem, p.Fix)
	}
	return b.String()
}

// Vars returns the names of the variables at fault, sorted, without repeats.
func (e *Error) Vars() []string {
	set := map[string]bool{}
	for _, p := range e.Problems {
		set[p.Var] = true
	}
	out := make([]string, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}
