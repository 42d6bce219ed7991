package storagemode

import (
	"fmt"
	"sort"
	"strings"

	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// Source names where a strategy decision came from.
type Source string

// The sources of a Decision, best first.
const (
	// SourceFlag: the strategy was given explicitly (--strategy rewrite or annotate).
	SourceFlag Source = "flag"
	// SourceEtcd: the newest stored values of the target resources in etcd.
	SourceEtcd Source = "etcd"
	// SourceMetrics: the API server's /metrics (transformation and KMS v2 key-ID series).
	SourceMetrics Source = "metrics"
	// SourceVersion: the server version alone (rewrite on 1.31+, else annotate).
	SourceVersion Source = "server-version"
)

// AnyResource is the Observation.Resource of evidence that is not about one resource (the KMS v2
// key-ID-hash metrics carry no resource label).
const AnyResource = "*"

// Observation is what one source says writes one resource's values.
type Observation struct {
	// Resource is "secrets", "deployments.apps", or AnyResource.
	Resource string `json:"resource"`
	// Provider wrote the resource's newest values (etcd) or its writes (metrics).
	Provider storedvalue.Provider `json:"provider"`
	// KeyName is the aescbc/aesgcm/secretbox key name or the KMS provider name, when known.
	KeyName string `json:"keyName,omitempty"`
	// Sampled is how many stored values were classified (etcd only).
	Sampled int `json:"sampled,omitempty"`
	// ByClass counts the sampled values by storedvalue class, KMS v2 key IDs hashed (etcd only).
	ByClass map[string]int `json:"byClass,omitempty"`
	// Detail says how the observation was made, for the report.
	Detail string `json:"detail,omitempty"`
}

func (o Observation) describe() string {
	p := string(o.Provider)
	if o.KeyName != "" {
		p += " (" + o.KeyName + ")"
	}
	s := o.Resource + ": " + p
	if o.Resource == AnyResource {
		s = p
	}
	if o.Detail != "" {
		s += " [" + o.Detail + "]"
	}
	return s
}

// Evidence is what one source said. Unavailable, when not empty, says why the source gave none
// (not configured, forbidden, no values): then Observations is empty.
type Evidence struct {
	Source       Source        `json:"source"`
	Observations []Observation `json:"observations,omitempty"`
	Unavailable  string        `json:"unavailable,omitempty"`
}

// Inputs are what Decide decides from. Etcd and Metrics may be nil (not gathered).
type Inputs struct {
	// Requested is the --strategy value: Auto, Rewrite or Annotate.
	Requested reencrypt.Strategy
	// ServerVersion is the API server's git version, for the fallback rule.
	ServerVersion string
	Etcd          *Evidence
	Metrics       *Evidence
}

// Decision is the strategy to run and why. It is JSON-serialisable and holds no key material.
type Decision struct {
	// Requested is the strategy asked for (auto, rewrite or annotate).
	Requested reencrypt.Strategy `json:"requested"`
	// Strategy is the concrete strategy to run.
	Strategy reencrypt.Strategy `json:"strategy"`
	// Rule is the source the strategy was decided from.
	Rule Source `json:"rule"`
	// Reason explains the decision in one sentence.
	Reason string `json:"reason"`
	// Writers are the providers the evidence showed writing the target resources.
	Writers []Observation `json:"writers,omitempty"`
	// Unavailable lists, per source, why it gave no evidence.
	Unavailable []string `json:"unavailable,omitempty"`
	// Warnings must be shown to the operator (the fallback rule was used, values are stored in
	// plain text, ...).
	Warnings []string `json:"warnings,omitempty"`
}

// Mode reports the provider classes the decision's evidence showed: KMSv1 when any writer is KMS
// v1, and so on. It is empty when the decision rests on no evidence.
func (d Decision) Mode() []storedvalue.Provider {
	seen := map[storedvalue.Provider]bool{}
	var out []storedvalue.Provider
	for _, w := range d.Writers {
		if !seen[w.Provider] {
			seen[w.Provider] = true
			out = append(out, w.Provider)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Shows reports whether the evidence showed provider p writing a target resource.
func (d Decision) Shows(p storedvalue.Provider) bool {
	for _, w := range d.Writers {
		if w.Provider == p {
			return true
		}
	}
	return false
}

// Decide turns the requested strategy into a concrete one.
//
// An explicit rewrite or annotate is kept (rule "flag"); evidence, when given, only adds a warning
// where it contradicts the choice (rewrite on a KMS v1 writer re-encrypts nothing).
//
// For auto, the first source with observations decides, etcd before metrics:
//   - any writer is KMS v1 -> annotate: KMS v1 marks nothing stale, only a real change re-encrypts
//     (annotate is correct for every provider, so one KMS v1 resource decides for all);
//   - otherwise (KMS v2, aescbc, aesgcm, secretbox, identity) -> rewrite: the API server marks
//     values under an old key version or key stale and a no-op write rewrites exactly those;
//     identity writers add a warning (the values are stored in plain text; the encryption config
//     does not cover them).
//
// Without observations it falls back to the version rule (rewrite on 1.31+, else annotate) and
// warns that it did, naming why each source gave nothing.
func Decide(in Inputs) (Decision, error) {
	d := Decision{Requested: in.Requested}
	var sources []*Evidence
	for _, e := range []*Evidence{in.Etcd, in.Metrics} {
		if e == nil {
			continue
		}
		if len(e.Observations) == 0 {
			why := e.Unavailable
			if why == "" {
				why = "no observations"
			}
			d.Unavailable = append(d.Unavailable, fmt.Sprintf("%s: %s", e.Source, why))
			continue
		}
		sources = append(sources, e)
	}

	if in.Requested != reencrypt.Auto {
		if _, err := reencrypt.ParseStrategy(string(in.Requested)); err != nil {
			return d, err
		}
		d.Strategy, d.Rule = in.Requested, SourceFlag
		d.Reason = fmt.Sprintf("--strategy %s", in.Requested)
		if len(sources) > 0 {
			d.Writers = sources[0].Observations
			if in.Requested == reencrypt.Rewrite && d.Shows(storedvalue.KMSv1) {
				d.Warnings = append(d.Warnings, fmt.Sprintf("%s shows KMS v1 writing %s: a rewrite re-encrypts nothing there (KMS v1 marks no value stale); use --strategy annotate",
					sources[0].Source, strings.Join(resourcesOf(d.Writers, storedvalue.KMSv1), ", ")))
			}
			d.Warnings = append(d.Warnings, identityWarnings(d.Writers)...)
		}
		return d, nil
	}

	if len(sources) > 0 {
		e := sources[0]
		d.Rule, d.Writers = e.Source, e.Observations
		if v1 := resourcesOf(d.Writers, storedvalue.KMSv1); len(v1) > 0 {
			d.Strategy = reencrypt.Annotate
			d.Reason = fmt.Sprintf("%s shows KMS v1 writing %s; KMS v1 marks no value stale, so a no-op write re-encrypts nothing and every object must be changed (annotate)",
				e.Source, strings.Join(v1, ", "))
		} else {
			d.Strategy = reencrypt.Rewrite
			d.Reason = fmt.Sprintf("%s shows %s; the API server marks values under an old key version or key stale, so a no-op write rewrites exactly those (rewrite)",
				e.Source, describeAll(d.Writers))
		}
		d.Warnings = append(d.Warnings, identityWarnings(d.Writers)...)
		return d, nil
	}

	s, err := reencrypt.Auto.Resolve(in.ServerVersion)
	if err != nil {
		return d, err
	}
	d.Strategy, d.Rule = s, SourceVersion
	d.Reason = fmt.Sprintf("server version %s: rewrite on Kubernetes >= 1.31, else annotate", in.ServerVersion)
	why := "no evidence of the provider that stores the objects"
	if len(d.Unavailable) > 0 {
		why += " (" + strings.Join(d.Unavailable, "; ") + ")"
	}
	warn := fmt.Sprintf("%s: chose %s from the server version %s alone", why, s, in.ServerVersion)
	if s == reencrypt.Rewrite {
		warn += "; a 1.31+ cluster may still encrypt with KMS v1 (KMSv1 feature gate), where a rewrite re-encrypts nothing: give --etcd-endpoints, allow GET /metrics, or pass --strategy annotate"
	}
	d.Warnings = append(d.Warnings, warn)
	return d, nil
}

func resourcesOf(obs []Observation, p storedvalue.Provider) []string {
	var out []string
	for _, o := range obs {
		if o.Provider == p {
			out = append(out, o.Resource)
		}
	}
	return out
}

func describeAll(obs []Observation) string {
	parts := make([]string, 0, len(obs))
	for _, o := range obs {
		parts = append(parts, o.describe())
	}
	return strings.Join(parts, ", ")
}

func identityWarnings(obs []Observation) []string {
	var out []string
	for _, r := range resourcesOf(obs, storedvalue.Identity) {
		if r == AnyResource {
			continue
		}
		out = append(out, fmt.Sprintf("%s are stored in plain text (identity): the encryption config does not encrypt them, and re-encrypting cannot change that", r))
	}
	return out
}
