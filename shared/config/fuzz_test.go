package config

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary values to the variables most likely to be mistyped. Load must not panic,
// must return either a valid configuration or an *Error naming only known variables, and must never
// print the webhook's query (where robot tokens live) in an error or in the configuration's String.
func FuzzLoad(f *testing.F) {
	f.Add("c1=key-a", "01:00-05:00", "Asia/Shanghai", "2m", "https://oapi.dingtalk.com/robot/send?access_token=TOKEN", "kms.example.com:443", "HTTPS", "8")
	f.Add("c1=alias/x,c2=acs:kms:cn-hangzhou:1:key/k", "22:00-04:00", "UTC", "0s", "http://127.0.0.1:1/x?TOKEN", "127.0.0.1:1", "HTTP", "1")
	f.Add(",,=", "24:00-24:00", "Local", "-1h", "://TOKEN", "a b", "ftp", "-1")
	f.Fuzz(func(t *testing.T, targets, window, tz, settle, webhook, endpoint, scheme, conc string) {
		m := map[string]string{
			EnvTargets: targets, EnvWindow: window, EnvTimezone: tz, EnvSettle: settle,
			EnvWebhookURL: webhook, EnvKMSEndpoint: endpoint, EnvEndpointScheme: scheme, EnvConcurrency: conc,
		}
		c, err := Load(func(k string) string { return m[k] }, Own{Region: "cn-hangzhou", AccountID: "1"})
		secret := ""
		if i := strings.IndexAny(webhook, "?#"); i >= 0 && len(webhook)-i > 8 {
			secret = webhook[i+1:]
		}
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("error %T without problems: %v", err, err)
			}
			for _, p := range ce.Problems {
				if !strings.HasPrefix(p.Var, "REKEY_") || p.Fix == "" {
					t.Fatalf("bad problem %+v", p)
				}
			}
			// The webhook's own problem (other variables' values may hold the same characters:
			// REKEY_SETTLE="00000000" is echoed in its own problem).
			for _, p := range ce.Problems {
				if secret != "" && p.Var == EnvWebhookURL && strings.Contains(p.Problem+p.Fix, secret) {
					t.Fatalf("error prints the webhook query: %v", err)
				}
			}
			return
		}
		if len(c.Targets) == 0 || c.Concurrency < 1 || c.Settle < 0 || c.Window.Start == c.Window.End || c.Window.Location == nil {
			t.Fatalf("accepted an invalid config: %s", c)
		}
		// The webhook as String prints it (other fields may hold the same digits: a settle of
		// 120000000000 ns contains "00000000").
		var printed struct {
			Webhook json.RawMessage `json:"webhook"`
		}
		if err := json.Unmarshal([]byte(c.String()), &printed); err != nil {
			t.Fatalf("String is not JSON: %v: %s", err, c)
		}
		if secret != "" && strings.Contains(string(printed.Webhook), secret) {
			t.Fatalf("String prints the webhook query: %s", c)
		}
		if c.EndpointScheme == "HTTP" && !isLoopback(c.KMSEndpoint) {
			t.Fatalf("HTTP accepted for %s", c.KMSEndpoint)
		}
	})
}
