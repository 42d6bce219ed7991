package handler

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/fc-runtime-go-sdk/fccontext"

	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
	"github.com/rekey-dev/rekey/shared/notify"
	"github.com/rekey-dev/rekey/shared/policy"
)

func fcContext(requestID string) context.Context {
	return fccontext.NewContext(context.Background(), &fccontext.FcContext{RequestID: requestID,
		Credentials: fccontext.Credentials{AccessKeyId: "STS.fc", AccessKeySecret: "fc-secret", SecurityToken: "fc-token"}})
}

func TestRotationRecordsJobsOnceAndRunsNothingOffPeak(t *testing.T) {
	e := newEnv(t, nil)
	h := e.rotation()
	payload := kmsEvent(t, "CreateKeyVersion", "ev-1")

	res, err := h.Handle(fcContext("req-1"), payload)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Decisions) != 1 || res.Decisions[0].Kind != policy.Rotate || res.RequestID != "req-1" {
		t.Fatalf("result = %+v", res)
	}
	d := res.Decisions[0]
	if d.Recorded == nil || len(d.Recorded.Added) != 2 {
		t.Fatalf("recorded = %+v", d.Recorded)
	}
	for _, c := range []string{c1, c2} {
		p := e.pending(c)
		if len(p) != 1 || p[0].Version != "v2-5c1f" || !p[0].NotBefore.Equal(eventTime.Add(config.DefaultSettle)) {
			t.Fatalf("%s pending = %+v", c, p)
		}
	}
	if n := len(e.runner.clusters()); n != 0 {
		t.Fatalf("offpeak mode ran %d jobs", n)
	}

	// EventBridge delivers it again: ignored as handled, nothing added, a normal result.
	res, err = h.Handle(fcContext("req-2"), payload)
	if err != nil {
		t.Fatal(err)
	}
	if res.Decisions[0].Kind != policy.Ignore || len(e.pending(c1)) != 1 {
		t.Fatalf("redelivery: %+v, pending %d", res.Decisions[0], len(e.pending(c1)))
	}

	// The result is JSON with the decisions' kind, reason and jobs.
	b, _ := json.Marshal(res)
	for _, want := range []string{`"decisions":[{"kind":"ignore"`, `"reason":`, `"requestId":"req-2"`} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("result JSON %s lacks %s", b, want)
		}
	}
	// One log line per decision, with the request id.
	if n := strings.Count(e.logs.String(), `"message":"decision: `); n != 2 {
		t.Fatalf("%d decision log lines, want 2:\n%s", n, e.logs)
	}
	if !strings.Contains(e.logs.String(), `"requestId":"req-1"`) {
		t.Fatalf("no request id in the log:\n%s", e.logs)
	}
}

func TestRotationAlertIsSentOnceAndRetriedOnTemporaryFailure(t *testing.T) {
	e := newEnv(t, nil)
	h := e.rotation()
	payload := kmsEvent(t, "DisableKey", "ev-disable")

	// The webhook is down: the invocation fails (FC retries) and the event is forgotten.
	e.notifier.errs = []error{&notify.DeliveryError{Status: 503, Attempts: 4, Temporary: true}}
	if _, err := h.Handle(fcContext("req-1"), payload); err == nil {
		t.Fatal("a temporary delivery failure must fail the invocation")
	}
	// The retry decides again and sends.
	res, err := h.Handle(fcContext("req-2"), payload)
	if err != nil {
		t.Fatal(err)
	}
	d := res.Decisions[0]
	if d.Kind != policy.Alert || d.Notified != "sent" || d.Notice == nil || d.Notice.Severity != policy.Critical {
		t.Fatalf("decision = %+v", d)
	}
	if len(e.notifier.sent) != 1 || !slices.Equal(e.notifier.sent[0].Clusters, []string{c1, c2}) {
		t.Fatalf("sent = %+v", e.notifier.sent)
	}
	// Another delivery: no second alert.
	if _, err := h.Handle(fcContext("req-3"), payload); err != nil {
		t.Fatal(err)
	}
	if len(e.notifier.sent) != 1 {
		t.Fatalf("%d alerts sent, want 1", len(e.notifier.sent))
	}
	if n := len(e.runner.clusters()); n != 0 || len(e.pending(c1)) != 0 {
		t.Fatalf("an alert ran %d jobs, pending %d", n, len(e.pending(c1)))
	}

	// A webhook that refuses for good (4xx): reported, not retried.
	e.notifier.errs = []error{&notify.DeliveryError{Status: 400, Attempts: 1}}
	res, err = h.Handle(fcContext("req-4"), kmsEvent(t, "ScheduleKeyDeletion", "ev-delete"))
	if err != nil {
		t.Fatalf("a permanent delivery failure must not fail the invocation: %v", err)
	}
	if !strings.HasPrefix(res.Decisions[0].Notified, "undeliverable") {
		t.Fatalf("notified = %q", res.Decisions[0].Notified)
	}
}

func TestRotationInputThatCannotBeActedOnIsAResult(t *testing.T) {
	e := newEnv(t, nil)
	h := e.rotation()
	for name, payload := range map[string][]byte{
		"not json":      []byte("{not json"),
		"wrong shape":   []byte(`{"hello":"world"}`),
		"too large":     []byte(`"` + strings.Repeat("x", 1<<20) + `"`),
		"empty array":   []byte(`[1]`),
		"timer payload": timerPayload(t, inWindow),
	} {
		res, err := h.Handle(fcContext("req"), payload)
		if err != nil {
			t.Fatalf("%s: error %v: FC would retry the same bytes", name, err)
		}
		if res.Error == "" && res.Ignored == "" {
			t.Fatalf("%s: result %+v says nothing", name, res)
		}
	}
	// Another account's event: ignored with a reason, nothing recorded.
	other := strings.ReplaceAll(string(kmsEvent(t, "CreateKeyVersion", "ev-x")), account, "1111111111111111")
	res, err := h.Handle(fcContext("req"), []byte(other))
	if err != nil || res.Decisions[0].Kind != policy.Ignore || res.Decisions[0].Reason == "" {
		t.Fatalf("other account: %+v, %v", res, err)
	}
	if len(e.pending(c1)) != 0 {
		t.Fatal("another account's event recorded a job")
	}
}

func TestRotationTransientFaultsAreErrors(t *testing.T) {
	t.Run("cluster unreachable", func(t *testing.T) {
		e := newEnv(t, nil)
		e.openErr[c2] = context.DeadlineExceeded
		if _, err := e.rotation().Handle(fcContext("req"), kmsEvent(t, "CreateKeyVersion", "ev-1")); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("kms unavailable while resolving an alias", func(t *testing.T) {
		e := newEnv(t, map[string]string{config.EnvTargets: c1 + "=alias/rekey-main"})
		e.kms.SetError(kmsfake.OpDescribeKey, kmsfake.ServiceUnavailable())
		_, err := e.rotation().Handle(fcContext("req"), kmsEvent(t, "CreateKeyVersion", "ev-1"))
		if err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("unknown alias is a note", func(t *testing.T) {
		e := newEnv(t, map[string]string{config.EnvTargets: c1 + "=alias/rekey-main"})
		res, err := e.rotation().Handle(fcContext("req"), kmsEvent(t, "CreateKeyVersion", "ev-1"))
		if err != nil || len(res.Notes) != 1 {
			t.Fatalf("res %+v err %v", res, err)
		}
	})
}

func TestRotationImmediateModeRunsDueJobs(t *testing.T) {
	e := newEnv(t, map[string]string{config.EnvRunMode: "immediate", config.EnvSettle: "0s"})
	e.kms.Rotate(keyA)
	h := e.rotation()
	res, err := h.Handle(fcContext("req-1"), kmsEvent(t, "CreateKeyVersion", "ev-1"))
	if err != nil {
		t.Fatal(err)
	}
	if got := e.runner.clusters(); !slices.Equal(got, []string{c1, c2}) {
		t.Fatalf("ran on %v, want c1 then c2", got)
	}
	if len(res.Runs) != 2 || res.Runs[0].Status != string(StatusDone) || len(e.pending(c1)) != 0 {
		t.Fatalf("runs = %+v, pending %d", res.Runs, len(e.pending(c1)))
	}
	req := e.runner.reqs[0]
	if req.Holder != "req-1" || req.Target.Key != keyA || req.Job.Version != "v2-5c1f" || req.StopMargin <= 0 {
		t.Fatalf("job request = %+v", req)
	}

	// With the settle delay not passed, nothing runs yet.
	e2 := newEnv(t, map[string]string{config.EnvRunMode: "immediate"})
	res, err = e2.rotation().Handle(fcContext("req-2"), kmsEvent(t, "CreateKeyVersion", "ev-1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(e2.runner.clusters()) != 0 || res.Runs[0].Waiting != 1 || res.Runs[0].Status != clusterIdle {
		t.Fatalf("runs before notBefore: %+v", res.Runs)
	}
	e2.clock.Step(config.DefaultSettle)
	if _, err := e2.rotation().Handle(fcContext("req-3"), kmsEvent(t, "CreateKeyVersion", "ev-other")); err != nil {
		t.Fatal(err)
	}
	if got := e2.runner.clusters(); len(got) != 2 {
		t.Fatalf("after the settle delay ran on %v", got)
	}
}

func TestCredentialsComeFromTheFCContext(t *testing.T) {
	fallback := credsFunc("LTAIfallback")
	p := Credentials(fallback)
	ctx, _ := begin(fcContext("req"))
	got, err := p.Retrieve(ctx)
	if err != nil || got.AccessKeyID != "STS.fc" || got.SecurityToken != "fc-token" {
		t.Fatalf("from the FC context: %v, %v", got, err)
	}
	got, err = p.Retrieve(context.Background())
	if err != nil || got.AccessKeyID != "LTAIfallback" {
		t.Fatalf("fallback: %v, %v", got, err)
	}
	if _, err := Credentials(nil).Retrieve(context.Background()); err == nil {
		t.Fatal("no credentials and no fallback: no error")
	}
	// A configuration error fails every invocation with itself.
	cerr := errors.New("REKEY_TARGETS is not set")
	if _, err := Failing(cerr)(context.Background(), nil); !errors.Is(err, cerr) {
		t.Fatalf("Failing: %v", err)
	}
}

func TestStopMargin(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for timeout, want := range map[time.Duration]time.Duration{5 * time.Second: time.Second, 120 * time.Second: 12 * time.Second, 900 * time.Second: 30 * time.Second} {
		ctx, cancel := context.WithDeadline(context.Background(), now.Add(timeout))
		if got := stopMargin(ctx, now); got != want {
			t.Errorf("timeout %s: margin %s, want %s", timeout, got, want)
		}
		cancel()
	}
}
