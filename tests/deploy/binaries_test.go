package deploy_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/infra/local/fc"
	"github.com/rekey-dev/rekey/shared/config"
)

// TestBinariesAnswerWithoutAnyCloud runs both function binaries under the local FC runtime API with
// the environment of s.yaml: a configuration error fails every invocation with that error, and
// input a function cannot act on is a result (not retried) before any cloud or cluster is called.
func TestBinariesAnswerWithoutAnyCloud(t *testing.T) {
	f := load(t)
	dir := t.TempDir()
	sup := fc.NewSupervisor(fc.Options{Region: region, AccountID: account,
		Credentials: fc.Credentials{AccessKeyID: "STS.deploytest", AccessKeySecret: "deploy-secret", SecurityToken: "deploy-token"}})
	t.Cleanup(func() { _ = sup.Close() })
	for name, pkg := range functions {
		fn, _ := f.Function(name)
		bin := filepath.Join(dir, name, "main")
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, b)
		}
		zero := 0
		for suffix, env := range map[string]map[string]string{
			"":         fn.EnvironmentVariables,
			"-badconf": {config.EnvTargets: "", config.EnvWindow: "25:00-26:00"},
		} {
			if err := sup.Register(fc.Function{Name: fn.FunctionName + suffix, Handler: fn.Handler, Binary: bin, Env: env,
				Timeout: 20 * time.Second, AsyncRetries: &zero}); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for _, name := range []string{"rekey-rotation-badconf", "rekey-offpeak-badconf"} {
		for range 2 {
			r, err := sup.Invoke(ctx, name, []byte(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			if r.Error == nil || !strings.Contains(r.Error.Message, config.EnvTargets) || !strings.Contains(r.Error.Message, config.EnvWindow) {
				t.Fatalf("%s: result %+v: want the configuration error naming every variable at fault", name, r)
			}
		}
	}

	timer := []byte(`{"triggerTime":"2026-11-28T18:00:00Z","triggerName":"offpeak","payload":"{}"}`)
	for _, c := range []struct {
		fn, payload, field string
	}{
		{"rekey-rotation", `{"not":"an event"}`, "error"},
		{"rekey-rotation", string(timer), "ignored"},
		{"rekey-offpeak", `{"id":"x","source":"acs.kms","specversion":"1.0","type":"kms:ActionTrail:ApiCall","data":{}}`, "error"},
	} {
		r, err := sup.Invoke(ctx, c.fn, []byte(c.payload))
		if err != nil {
			t.Fatal(err)
		}
		if r.Error != nil {
			t.Fatalf("%s %s: function error %v: FC would retry input it can never act on", c.fn, c.payload, r.Error)
		}
		var body map[string]any
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatalf("%s: body %s: %v", c.fn, r.Body, err)
		}
		if s, _ := body[c.field].(string); s == "" || body["requestId"] != r.RequestID {
			t.Fatalf("%s %s: body %s: want %q set and the request id", c.fn, c.payload, r.Body, c.field)
		}
	}
	// Nothing a function printed carries the role's credentials.
	for _, name := range []string{"rekey-rotation", "rekey-offpeak", "rekey-rotation-badconf"} {
		logs, _ := sup.Logs(name)
		for _, secret := range []string{"deploy-secret", "deploy-token"} {
			if strings.Contains(string(logs), secret) {
				t.Fatalf("%s logs contain a credential", name)
			}
		}
	}
}
