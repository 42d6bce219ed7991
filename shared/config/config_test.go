package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

const token = "s3cr3t-robot-token"

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

var own = Own{Region: "cn-hangzhou", AccountID: "5068000000000001"}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(env(map[string]string{EnvTargets: "c1=key-a, c2=key-a ,c3=alias/k8s"}), own)
	if err != nil {
		t.Fatal(err)
	}
	want := []Target{{Cluster: "c1", Key: "key-a"}, {Cluster: "c2", Key: "key-a"}, {Cluster: "c3", Key: "alias/k8s"}}
	if len(c.Targets) != len(want) {
		t.Fatalf("targets = %+v", c.Targets)
	}
	for i, w := range want {
		if c.Targets[i].Cluster != w.Cluster || c.Targets[i].Key != w.Key || c.Targets[i].Ref.String() != w.Key {
			t.Fatalf("target %d = %+v, want %+v", i, c.Targets[i], w)
		}
	}
	if c.Region != own.Region || c.AccountID != own.AccountID {
		t.Fatalf("region/account = %s/%s", c.Region, c.AccountID)
	}
	if c.Window.String() != "01:00-05:00 Asia/Shanghai" || c.Settle != 2*time.Minute || c.RunMode != RunOffPeak ||
		c.Strategy != StrategyAuto || c.Concurrency != DefaultConcurrency || c.Webhook.IsSet() || c.EndpointScheme != "HTTPS" {
		t.Fatalf("defaults wrong: %s", c)
	}
	if c.KMSEndpoint != "kms-vpc.cn-hangzhou.aliyuncs.com" || c.CSEndpoint != "cs-vpc.cn-hangzhou.aliyuncs.com" ||
		c.ActionTrailEndpoint != "actiontrail-vpc.cn-hangzhou.aliyuncs.com" {
		t.Fatalf("endpoints: %s %s %s", c.KMSEndpoint, c.CSEndpoint, c.ActionTrailEndpoint)
	}
	if tg, ok := c.Target("c3"); !ok || tg.Key != "alias/k8s" {
		t.Fatalf("Target(c3) = %+v %v", tg, ok)
	}
	if _, ok := c.Target("nope"); ok {
		t.Fatal("Target(nope) found")
	}
}

func TestLoadEverything(t *testing.T) {
	c, err := Load(env(map[string]string{
		EnvTargets:                "cabc-1=acs:kms:cn-shanghai:42:key/key-b,c_2=key-b",
		EnvRegion:                 "cn-shanghai",
		EnvAccountID:              "42",
		EnvWindow:                 "22:30-04:00",
		EnvTimezone:               "Europe/Berlin",
		EnvSettle:                 "90s",
		EnvRunMode:                "immediate",
		EnvStrategy:               "annotate",
		EnvConcurrency:            "8",
		EnvWebhookURL:             "https://oapi.dingtalk.com/robot/send?access_token=" + token,
		EnvKMSEndpoint:            "127.0.0.1:18080",
		EnvCSEndpoint:             "localhost:18081",
		EnvActionTrailEndpoint:    "[::1]:18082",
		EnvEndpointScheme:         "http",
		EnvLogLevel:               "DEBUG",
		"REKEY_KUBECONFIG_CABC_1": "/etc/rekey/abc.kubeconfig",
	}), Own{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Region != "cn-shanghai" || c.AccountID != "42" || c.Settle != 90*time.Second || c.RunMode != RunImmediate ||
		c.Strategy != StrategyAnnotate || c.Concurrency != 8 || c.EndpointScheme != "HTTP" || c.LogLevel != zerolog.DebugLevel {
		t.Fatalf("config = %s", c)
	}
	if c.Window.Start != 22*60+30 || c.Window.End != 4*60 || c.Window.Location.String() != "Europe/Berlin" {
		t.Fatalf("window = %s", c.Window)
	}
	if c.Webhook.Kind() != WebhookDingTalk || !strings.Contains(c.Webhook.URL(), token) {
		t.Fatalf("webhook kind %q", c.Webhook.Kind())
	}
	if !reflect.DeepEqual(c.Kubeconfigs, map[string]string{"cabc-1": "/etc/rekey/abc.kubeconfig"}) {
		t.Fatalf("kubeconfigs = %v", c.Kubeconfigs)
	}
	if c.Targets[0].Ref.ID != "key-b" || !c.Targets[0].Ref.IsARN() {
		t.Fatalf("target 0 ref = %+v", c.Targets[0].Ref)
	}
}

// TestLoadReportsEveryProblem sets every variable wrong at once: one error must name each, with a fix.
func TestLoadReportsEveryProblem(t *testing.T) {
	_, err := Load(env(map[string]string{
		EnvTargets:             "c1=key-a,,c1=key-b,c2,c3=key x,bad id=key-a,c4=acs:kms:cn-beijing:1:key/k",
		EnvRegion:              "Hangzhou",
		EnvAccountID:           "acct",
		EnvWindow:              "25:00-05:00",
		EnvTimezone:            "Mars/Olympus",
		EnvSettle:              "two minutes",
		EnvGateSettle:          "2h",
		EnvRunMode:             "sometimes",
		EnvStrategy:            "replace-all",
		EnvConcurrency:         "0",
		EnvWebhookURL:          "http://hooks.example.com/x?token=" + token,
		EnvKMSEndpoint:         "https://kms.cn-hangzhou.aliyuncs.com",
		EnvCSEndpoint:          "cs.example.com:99999",
		EnvActionTrailEndpoint: "a b",
		EnvEndpointScheme:      "ftp",
		EnvLogLevel:            "trace",
	}), Own{})
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v", err)
	}
	msg := err.Error()
	if strings.Contains(msg, token) {
		t.Fatalf("the error echoes the webhook token:\n%s", msg)
	}
	want := append([]string(nil), Vars...)
	if got := ce.Vars(); !reflect.DeepEqual(got, sorted(want)) {
		t.Fatalf("vars at fault = %v\nwant %v\n%s", got, sorted(want), msg)
	}
	for _, frag := range []string{
		"entry 2 is empty", "cluster c1 is listed more than once", `entry 4 ("c2") is not clusterId=keyId`,
		`entry 5 (cluster c3): key ID "key x"`, `entry 6: "bad id" is not a cluster ID`, "the key ARN is in region cn-beijing",
		`"Hangzhou" is not a region ID`, `"acct" is not a numeric account ID`, "hour 25 is out of range", `"Mars/Olympus" is not an IANA time zone`,
		`"two minutes" is not a Go duration`, `"sometimes" is not a run mode`, `"replace-all" is not a strategy`,
		"between 1 and 256", "alerts must go over https", `port "99999"`, `"ftp" is not a scheme`, `"trace" is not a log level`,
	} {
		if !strings.Contains(msg, frag) {
			t.Errorf("error lacks %q:\n%s", frag, msg)
		}
	}
	for _, p := range ce.Problems {
		if p.Fix == "" || !strings.Contains(msg, p.Var+": ") {
			t.Errorf("problem without fix or name: %+v", p)
		}
	}
	if n := strings.Count(msg, "\n"); n != len(ce.Problems) || !strings.HasPrefix(msg, fmt.Sprintf("invalid rekey configuration (%d problems):", n)) {
		t.Errorf("want one line per problem:\n%s", msg)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestLoadTable(t *testing.T) {
	base := map[string]string{EnvTargets: "c1=key-a"}
	for _, tc := range []struct {
		name    string
		set     map[string]string
		own     Own
		wantErr string // "" = valid
	}{
		{name: "no targets", set: map[string]string{EnvTargets: ""}, own: own, wantErr: "REKEY_TARGETS: is not set"},
		{name: "no region anywhere", own: Own{AccountID: "1"}, wantErr: "REKEY_REGION: is not set"},
		{name: "no account anywhere", own: Own{Region: "cn-hangzhou"}, wantErr: "REKEY_ACCOUNT_ID: is not set"},
		{name: "env overrides own", set: map[string]string{EnvRegion: "cn-beijing", EnvAccountID: "7"}, own: own},
		{name: "key arn of own account", set: map[string]string{EnvTargets: "c1=acs:kms:cn-hangzhou:5068000000000001:alias/k"}, own: own},
		{name: "key arn of other account", set: map[string]string{EnvTargets: "c1=acs:kms:cn-hangzhou:1:key/k"}, own: own, wantErr: "account 1"},
		{name: "trailing comma", set: map[string]string{EnvTargets: "c1=key-a,"}, own: own, wantErr: "entry 2 is empty"},
		{name: "window wraps", set: map[string]string{EnvWindow: "23:00-01:00"}, own: own},
		{name: "window all day", set: map[string]string{EnvWindow: "00:00-24:00"}, own: own},
		{name: "window empty", set: map[string]string{EnvWindow: "02:00-02:00"}, own: own, wantErr: "is empty"},
		{name: "window bad", set: map[string]string{EnvWindow: "1:00-5:00"}, own: own, wantErr: "REKEY_WINDOW"},
		{name: "window start 24", set: map[string]string{EnvWindow: "24:00-05:00"}, own: own, wantErr: "hour 24 is out of range"},
		{name: "timezone UTC", set: map[string]string{EnvTimezone: "UTC"}, own: own},
		{name: "timezone Local refused", set: map[string]string{EnvTimezone: "Local"}, own: own, wantErr: "REKEY_TIMEZONE"},
		{name: "settle zero", set: map[string]string{EnvSettle: "0s"}, own: own},
		{name: "settle negative", set: map[string]string{EnvSettle: "-1m"}, own: own, wantErr: "out of range"},
		{name: "settle too long", set: map[string]string{EnvSettle: "25h"}, own: own, wantErr: "out of range"},
		{name: "concurrency max", set: map[string]string{EnvConcurrency: "256"}, own: own},
		{name: "log level warn", set: map[string]string{EnvLogLevel: "warn"}, own: own},
		{name: "log level unknown", set: map[string]string{EnvLogLevel: "verbose"}, own: own, wantErr: "REKEY_LOG_LEVEL"},
		{name: "concurrency too high", set: map[string]string{EnvConcurrency: "257"}, own: own, wantErr: "REKEY_CONCURRENCY"},
		{name: "concurrency not a number", set: map[string]string{EnvConcurrency: "many"}, own: own, wantErr: "REKEY_CONCURRENCY"},
		{name: "webhook generic https", set: map[string]string{EnvWebhookURL: "https://hooks.example.com/rekey"}, own: own},
		{name: "webhook loopback http", set: map[string]string{EnvWebhookURL: "http://127.0.0.1:9999/alert"}, own: own},
		{name: "webhook user info", set: map[string]string{EnvWebhookURL: "https://u:" + token + "@hooks.example.com/"}, own: own, wantErr: "user:password"},
		{name: "webhook no host", set: map[string]string{EnvWebhookURL: "https:///x?t=" + token}, own: own, wantErr: "has no host"},
		{name: "webhook garbage", set: map[string]string{EnvWebhookURL: "://" + token}, own: own, wantErr: "is not a URL"},
		{name: "webhook ctl char", set: map[string]string{EnvWebhookURL: "https://h/\x7f?t=" + token}, own: own, wantErr: "is not a URL"},
		{name: "webhook scheme", set: map[string]string{EnvWebhookURL: "ftp://h/x"}, own: own, wantErr: `scheme "ftp"`},
		{name: "http with remote endpoints", set: map[string]string{EnvEndpointScheme: "HTTP"}, own: own, wantErr: "REKEY_KMS_ENDPOINT, REKEY_CS_ENDPOINT, REKEY_ACTIONTRAIL_ENDPOINT is not"},
		{name: "http with one remote endpoint", set: map[string]string{EnvEndpointScheme: "HTTP", EnvKMSEndpoint: "127.0.0.1:1", EnvCSEndpoint: "127.0.0.1:2"}, own: own, wantErr: "REKEY_ACTIONTRAIL_ENDPOINT is not"},
		{name: "https with loopback endpoints", set: map[string]string{EnvKMSEndpoint: "127.0.0.1:1"}, own: own},
		{name: "endpoint host only", set: map[string]string{EnvKMSEndpoint: "kms.cn-hangzhou.aliyuncs.com"}, own: own},
		{name: "endpoint with path", set: map[string]string{EnvCSEndpoint: "cs.example.com/x"}, own: own, wantErr: "REKEY_CS_ENDPOINT"},
		{name: "endpoint port zero", set: map[string]string{EnvCSEndpoint: "cs.example.com:0"}, own: own, wantErr: "REKEY_CS_ENDPOINT"},
		{name: "endpoint empty port", set: map[string]string{EnvCSEndpoint: "cs.example.com:"}, own: own, wantErr: "REKEY_CS_ENDPOINT"},
		{name: "kubeconfig name collision", set: map[string]string{EnvTargets: "c-1=key-a,c_1=key-a"}, own: own, wantErr: "REKEY_KUBECONFIG_C_1: clusters c-1 and c_1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]string{}
			for k, v := range base {
				m[k] = v
			}
			for k, v := range tc.set {
				m[k] = v
			}
			c, err := Load(env(m), tc.own)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q (config %s)", err, tc.wantErr, c)
			}
			if strings.Contains(err.Error(), token) {
				t.Fatalf("error echoes the token: %v", err)
			}
		})
	}
}

func TestWebhookNeverPrintsToken(t *testing.T) {
	for _, raw := range []string{
		"https://oapi.dingtalk.com/robot/send?access_token=" + token,
		"https://hooks.example.com/services/" + token,
		"https://hooks.example.com/x#" + token,
		"https://hooks.example.com/x?" + token,
	} {
		c, err := Load(env(map[string]string{EnvTargets: "c1=key-a", EnvWebhookURL: raw}), own)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(c)
		for _, s := range []string{c.String(), c.Webhook.String(), fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%v", c.Webhook), fmt.Sprintf("%#v", c.Webhook), string(b)} {
			if strings.Contains(s, token) {
				t.Errorf("%s printed the token: %s", raw, s)
			}
		}
		if c.Webhook.URL() != raw {
			t.Errorf("URL() = %q, want the full URL", c.Webhook.URL())
		}
	}
	w, _ := ParseWebhook("https://oapi.dingtalk.com/robot/send?access_token=" + token)
	if got := w.String(); got != "https://oapi.dingtalk.com/robot/send?REDACTED" {
		t.Errorf("String = %q", got)
	}
	if w.Kind() != WebhookDingTalk {
		t.Errorf("kind = %q", w.Kind())
	}
	g, _ := ParseWebhook("https://open.example.com/robot/send?x=1")
	if g.Kind() != WebhookGeneric {
		t.Errorf("kind = %q", g.Kind())
	}
}

func TestKubeconfigVar(t *testing.T) {
	for in, want := range map[string]string{
		"c0123abcdef": "REKEY_KUBECONFIG_C0123ABCDEF",
		"c-1_x":       "REKEY_KUBECONFIG_C_1_X",
	} {
		if got := KubeconfigVar(in); got != want {
			t.Errorf("KubeconfigVar(%q) = %q, want %q", in, got, want)
		}
	}
}
