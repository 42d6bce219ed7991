package storagemode

import (
	"strings"
	"testing"

	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

func obs(resource string, p storedvalue.Provider) Observation {
	return Observation{Resource: resource, Provider: p, KeyName: "k"}
}

func etcdEv(o ...Observation) *Evidence   { return &Evidence{Source: SourceEtcd, Observations: o} }
func metricEv(o ...Observation) *Evidence { return &Evidence{Source: SourceMetrics, Observations: o} }

// TestDecideTable is the decision table of auto (and the explicit strategies): every provider
// class from etcd and from metrics, the order of the sources, and the fallback with its warning.
func TestDecideTable(t *testing.T) {
	noEtcd := &Evidence{Source: SourceEtcd, Unavailable: "no --etcd-endpoints"}
	forbidden := &Evidence{Source: SourceMetrics, Unavailable: "GET /metrics: not allowed to read /metrics"}
	cases := []struct {
		name      string
		in        Inputs
		want      reencrypt.Strategy
		rule      Source
		reason    string // substring of Reason
		warn      string // substring of a warning; "" means no warning
		unavail   int
		writersOf storedvalue.Provider
	}{
		{name: "etcd kms-v2", in: Inputs{Requested: reencrypt.Auto, ServerVersion: "v1.37.2", Etcd: etcdEv(obs("secrets", storedvalue.KMSv2))},
			want: reencrypt.Rewrite, rule: SourceEtcd, reason: "etcd shows secrets: kms-v2", writersOf: storedvalue.KMSv2},
		{name: "etcd kms-v1 on 1.37", in: Inputs{Requested: reencrypt.Auto, ServerVersion: "v1.37.2", Etcd: etcdEv(obs("secrets", storedvalue.KMSv1))},
			want: reencrypt.Annotate, rule: SourceEtcd, reason: "KMS v1 writing secrets", writersOf: storedvalue.KMSv1},
		{name: "etcd aescbc", in: Inputs{Requested: reencrypt.Auto, ServerVersion: "v1.30.0", Etcd: etcdEv(obs("secrets", storedvalue.AESCBC))},
			want: reencrypt.Rewrite, rule: SourceEtcd, reason: "aescbc"},
		{name: "etcd aesgcm", in: Inputs{Requested: reencrypt.Auto, ServerVersion: "v1.30.0", Etcd: etcdEv(obs("secrets", storedvalue.AESGCM))},
			want: reencrypt.Rewrite, rule: SourceEtcd, reason: "aesgcm"},
		{name: "etcd secretbox", in: Inputs{Requested: reencrypt.Auto, ServerVersion: "v1.37.2", Etcd: etcdEv(obs("secrets", storedvalue.Secretbox))},
			want: reencrypt.Rewrite, rule: SourceEtcd, reason: "secretbox"},
		{name: "etcd identity says so", in: Inputs{Requested: reencrypt.Auto, ServerVersion: "v1.37.2", Etcd: etcdEv(obs("configmaps", storedvalue.Identity))},
			want: reencrypt.Rewrite, rule: SourceEtcd, reason: "identity", warn: "configmaps are stored in plain text (identity)", writersOf: storedvalue.Identity},
		{name: "one kms-v1 resource decides for all", in: Inputs{Requested: reencrypt.Auto, ServerVersion: "v1.37.2",
			Etcd: etcdEv(obs("secrets", storedvalue.KMSv2), obs("configmaps", storedvalue.KMSv1))},
			want: reencrypt.Annotate, rule: SourceEtcd, reason: "KMS v1 writing configmaps"},
		{name: "etcd before metrics", in: Inputs{Requested: reencrypt.Auto, ServerVersion: "v1.37.2",
			Etcd: etcdEv(obs("secrets", storedvalue.KMSv1)), Metrics: metricEv(obs("secrets", storedvalue.KMSv2))},
			want: reencrypt.Annotate, rule: SourceEtcd},
		{name: "etcd empty, metrics kms-v2", in: Inputs{Requested: reencrypt.Auto, ServerVersion: "v1.37.2",
			Etcd: &Evidence{Source: SourceEtcd, Unavailable: "no stored values under /registry/secrets/"}, Metrics: metricEv(obs("secrets", storedvalue.KMSv2))},
			want: reencrypt.Rewrite, rule: SourceMetrics, reason: "metrics shows secrets: kms-v2", unavail: 1},
		{name: "metrics kms-v1", in: Inputs{Requested: reencrypt.Auto, ServerVersion: "v1.37.2", Etcd: noEtcd, Metrics: metricEv(obs("secrets", storedvalue.KMSv1))},
			want: reencrypt.Annotate, rule: SourceMetrics, unavail: 1},
		{name: "metrics kms-v2 series only", in: Inputs{Requested: reencrypt.Auto, ServerVersion: "v1.37.2", Metrics: metricEv(obs(AnyResource, storedvalue.KMSv2))},
			want: reencrypt.Rewrite, rule: SourceMetrics, reason: "metrics shows kms-v2 (k)"},
		{name: "no evidence, 1.37: rewrite with a warning", in: Inputs{Requested: reencrypt.Auto, ServerVersion: "v1.37.2", Etcd: noEtcd, Metrics: forbidden},
			want: reencrypt.Rewrite, rule: SourceVersion, reason: "server version v1.37.2", unavail: 2,
			warn: "no evidence of the provider that stores the objects (etcd: no --etcd-endpoints; metrics: GET /metrics: not allowed to read /metrics): chose rewrite from the server version v1.37.2 alone; a 1.31+ cluster may still encrypt with KMS v1"},
		{name: "no evidence, 1.30: annotate with a warning", in: Inputs{Requested: reencrypt.Auto, ServerVersion: "v1.30.4-aliyun.1"},
			want: reencrypt.Annotate, rule: SourceVersion, warn: "chose annotate from the server version v1.30.4-aliyun.1 alone"},
		{name: "explicit rewrite kept, contradiction warned", in: Inputs{Requested: reencrypt.Rewrite, ServerVersion: "v1.37.2", Etcd: etcdEv(obs("secrets", storedvalue.KMSv1))},
			want: reencrypt.Rewrite, rule: SourceFlag, warn: "use --strategy annotate"},
		{name: "explicit annotate kept", in: Inputs{Requested: reencrypt.Annotate, ServerVersion: "v1.37.2", Etcd: etcdEv(obs("secrets", storedvalue.KMSv2))},
			want: reencrypt.Annotate, rule: SourceFlag},
		{name: "explicit rewrite without evidence: no warning", in: Inputs{Requested: reencrypt.Rewrite, ServerVersion: "v1.37.2"},
			want: reencrypt.Rewrite, rule: SourceFlag},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Decide(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if d.Strategy != tc.want || d.Rule != tc.rule {
				t.Fatalf("got %s by %s (%s), want %s by %s", d.Strategy, d.Rule, d.Reason, tc.want, tc.rule)
			}
			if !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("reason %q does not contain %q", d.Reason, tc.reason)
			}
			warnings := strings.Join(d.Warnings, "\n")
			if tc.warn == "" && warnings != "" {
				t.Errorf("unexpected warnings: %s", warnings)
			}
			if tc.warn != "" && !strings.Contains(warnings, tc.warn) {
				t.Errorf("warnings %q do not contain %q", warnings, tc.warn)
			}
			if len(d.Unavailable) != tc.unavail {
				t.Errorf("unavailable %v, want %d entries", d.Unavailable, tc.unavail)
			}
			if tc.writersOf != "" && !d.Shows(tc.writersOf) {
				t.Errorf("writers %v do not show %s", d.Writers, tc.writersOf)
			}
		})
	}
}

func TestDecideErrors(t *testing.T) {
	if _, err := Decide(Inputs{Requested: reencrypt.Auto, ServerVersion: "not-a-version"}); err == nil {
		t.Error("auto with an unparsable version and no evidence: want an error")
	}
	if _, err := Decide(Inputs{Requested: "bogus"}); err == nil {
		t.Error("unknown strategy: want an error")
	}
	// Evidence makes the version irrelevant.
	if d, err := Decide(Inputs{Requested: reencrypt.Auto, ServerVersion: "garbage", Etcd: etcdEv(obs("secrets", storedvalue.KMSv1))}); err != nil || d.Strategy != reencrypt.Annotate {
		t.Errorf("evidence with a bad version: %v %v", d.Strategy, err)
	}
}
