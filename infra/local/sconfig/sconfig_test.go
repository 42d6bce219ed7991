package sconfig

import (
	"strings"
	"testing"
	"time"
)

var sampleVars = Vars{
	Env:    map[string]string{"REKEY_TARGETS": "c1=key-1,c2=key-1", "REGION": "cn-hangzhou"},
	Config: map[string]string{"AccountID": "5068000000000001"},
}

func TestParseSample(t *testing.T) {
	f, err := ParseFile("testdata/s.yaml", sampleVars)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	fns := f.Functions()
	if len(fns) != 2 || fns[0].Resource != "offpeak" || fns[1].Resource != "rotation" {
		t.Fatalf("functions = %+v", fns)
	}
	rot, ok := f.Function("rekey-rotation")
	if !ok {
		t.Fatal("rekey-rotation not found")
	}
	if rot.Runtime != "go1" || rot.Handler != "main" || rot.Region != "cn-hangzhou" || rot.MemorySize != 512 ||
		rot.EffectiveTimeout() != 900*time.Second || rot.Role != "acs:ram::5068000000000001:role/rekey-function" {
		t.Fatalf("rotation props = %+v", rot.Props)
	}
	if dir, ok := rot.CodeDir(); !ok || dir != "./dist/rotation" {
		t.Fatalf("CodeDir = %q, %v", dir, ok)
	}
	wantEnv := map[string]string{"REKEY_TARGETS": "c1=key-1,c2=key-1", "REKEY_RUN_MODE": "offpeak", "REKEY_REGION": "cn-hangzhou"}
	for k, v := range wantEnv {
		if rot.EnvironmentVariables[k] != v {
			t.Errorf("env %s = %q, want %q", k, rot.EnvironmentVariables[k], v)
		}
	}
	if len(rot.PreDeploy) != 1 || !strings.Contains(rot.PreDeploy[0].Run, "CGO_ENABLED=0 go build") || rot.PreDeploy[0].Path != "./" {
		t.Fatalf("pre-deploy = %+v", rot.PreDeploy)
	}
	if a := rot.AsyncInvokeConfig; a == nil || a.MaxAsyncRetryAttempts == nil || *a.MaxAsyncRetryAttempts != 2 {
		t.Fatalf("asyncInvokeConfig = %+v", rot.AsyncInvokeConfig)
	}
	eb, err := rot.Triggers[0].EventBridge()
	if err != nil || !eb.TriggerEnable || eb.AsyncInvocationType ||
		eb.EventRuleFilterPattern != `{"source":["acs.kms"],"type":["kms:ActionTrail:ApiCall"]}` {
		t.Fatalf("eventbridge = %+v, %v", eb, err)
	}
	if _, err := rot.Triggers[0].Timer(); err == nil {
		t.Fatal("an eventbridge trigger decoded as a timer")
	}

	off, _ := f.Function("offpeak")
	timer, err := off.Triggers[0].Timer()
	if err != nil || !timer.Enable || timer.Payload != `{"mode":"sweep"}` {
		t.Fatalf("timer = %+v, %v", timer, err)
	}
	loc, expr, err := timer.Schedule()
	if err != nil || loc.String() != "Asia/Shanghai" || expr != "0 */5 1-4 * * *" {
		t.Fatalf("Schedule = %v %q %v", loc, expr, err)
	}
	if off.EffectiveTimeout() != 600*time.Second || off.MemorySize != 0 {
		t.Fatalf("offpeak props = %+v", off.Props)
	}
}

func TestParseReportsEveryUnresolvedReference(t *testing.T) {
	_, err := ParseFile("testdata/s.yaml", Vars{Env: map[string]string{}})
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{`env "REKEY_TARGETS" is not set`, `env "REGION" is not set`, `config "AccountID" is not set`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "REKEY_RUN_MODE") {
		t.Errorf("a reference with a default was reported: %v", err)
	}
	_, err = Parse([]byte("edition: 3.0.0\nname: ${resources.x.props.y}\nresources: {}\n"), Vars{Env: map[string]string{}})
	if err == nil || !strings.Contains(err.Error(), "unsupported reference") {
		t.Fatalf("unsupported reference: %v", err)
	}
}

func TestValidateListsProblems(t *testing.T) {
	src := `
edition: 2.0.0
name: bad
resources:
  f:
    component: fc3
    props:
      region: cn-hangzhou
      functionName: f
      runtime: go1
      code: ./dist/f
      environmentVariables: {FC_SECRET: x}
      asyncInvokeConfig: {maxAsyncRetryAttempts: 9}
      triggers:
        - triggerName: t
          triggerType: timer
          triggerConfig: {cronExpression: 'CRON_TZ=Nowhere/City 0 0 2 * * *', enable: true}
        - triggerName: t
          triggerType: eventbridge
          triggerConfig: {triggerEnable: true}
        - triggerName: o
          triggerType: oss
          triggerConfig: {}
  other:
    component: fc
`
	f, err := Parse([]byte(src), Vars{Env: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	err = f.Validate()
	if err == nil {
		t.Fatal("want problems")
	}
	for _, want := range []string{"edition", "component \"fc\"", "props.handler is required", "timeout is not set",
		"FC_SECRET", "maxAsyncRetryAttempts 9", "cronExpression", "repeated", "eventRuleFilterPattern is required", `triggerType "oss"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestScheduleUTC(t *testing.T) {
	loc, expr, err := TimerConfig{CronExpression: "0 0 18 * * *"}.Schedule()
	if err != nil || loc != time.UTC || expr != "0 0 18 * * *" {
		t.Fatalf("Schedule = %v %q %v", loc, expr, err)
	}
	if _, _, err := (TimerConfig{CronExpression: "CRON_TZ=Asia/Shanghai"}).Schedule(); err == nil {
		t.Fatal("CRON_TZ without an expression accepted")
	}
}
