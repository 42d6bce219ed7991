package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/retry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// instantTimer fires at once; safe for concurrent use.
type instantTimer struct{}

func (instantTimer) Start(time.Duration) {}
func (instantTimer) Stop()               {}
func (instantTimer) C() <-chan time.Time {
	c := make(chan time.Time, 1)
	c <- time.Time{}
	return c
}

const (
	queryToken = "SUPERSECRETQUERYTOKEN42"
	pathToken  = "PATHSECRETTOKEN9001"
)

var notice = policy.Notice{
	Severity: policy.Critical,
	Title:    "CRITICAL: DisableKey on KMS key key-abc used by 2 cluster(s)",
	Key:      "key-abc",
	Clusters: []string{"c1", "c2"},
	Action:   "DisableKey",
	Impact:   "the API servers of these clusters cannot decrypt Secrets",
	Actor:    "ram-user alice of account 123",
	SourceIP: "10.0.0.9",
	Event:    events.DedupKey{Source: "acs.kms", ID: "ev-1"},
	RecordID: "rec-1",
	Account:  "123",
	Region:   "cn-hangzhou",
	Time:     time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC),
}

// receiver is a test webhook: answers[i] answers the i-th post (the last one repeats).
type receiver struct {
	calls   atomic.Int32
	answers []func(w http.ResponseWriter, r *http.Request)
	bodies  chan []byte
	paths   chan string
}

func newReceiver(answers ...func(w http.ResponseWriter, r *http.Request)) *receiver {
	return &receiver{answers: answers, bodies: make(chan []byte, 16), paths: make(chan string, 16)}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i := int(rc.calls.Add(1)) - 1
	b, _ := io.ReadAll(r.Body)
	if r.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		http.Error(w, "content type "+r.Header.Get("Content-Type"), http.StatusUnsupportedMediaType)
		return
	}
	rc.bodies <- b
	rc.paths <- r.URL.RequestURI()
	rc.answers[min(i, len(rc.answers)-1)](w, r)
}

func status(code int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

func webhook(t *testing.T, raw string) config.Webhook {
	t.Helper()
	h, err := config.ParseWebhook(raw)
	if err != nil {
		t.Fatalf("ParseWebhook: %v", err)
	}
	return h
}

func fastRetry(attempts int) Option {
	return WithRetryPolicy(retry.Policy{InitialInterval: time.Millisecond, MaxAttempts: attempts, Timer: instantTimer{}})
}

// genericServer starts rc behind a loopback http server and returns its webhook (with tokens in
// the path and the query, as many services do).
func genericServer(t *testing.T, rc *receiver) config.Webhook {
	t.Helper()
	ts := httptest.NewServer(rc)
	t.Cleanup(ts.Close)
	return webhook(t, ts.URL+"/hooks/"+pathToken+"?token="+queryToken)
}

// dingTalkServer starts rc as https://oapi.dingtalk.com (TLS verified against the test
// certificate; the dialer leads to the test server) and returns the webhook and the client.
func dingTalkServer(t *testing.T, rc *receiver) (config.Webhook, *http.Client) {
	t.Helper()
	ts := httptest.NewTLSServer(rc)
	t.Cleanup(ts.Close)
	tr := ts.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: tr.TLSClientConfig.RootCAs, ServerName: "example.com"} // a name of httptest's certificate
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, ts.Listener.Addr().String())
	}
	t.Cleanup(tr.CloseIdleConnections)
	return webhook(t, "https://oapi.dingtalk.com/robot/send?access_token="+queryToken), &http.Client{Transport: tr}
}

func TestGenericWebhookGetsTheNoticeAsJSON(t *testing.T) {
	rc := newReceiver(status(http.StatusOK, "ok"))
	hook := genericServer(t, rc)
	if hook.Kind() != config.WebhookGeneric {
		t.Fatalf("kind %q", hook.Kind())
	}
	if err := New(hook, zerolog.Nop()).Send(context.Background(), notice); err != nil {
		t.Fatalf("Send: %v", err)
	}
	var got policy.Notice
	if err := json.Unmarshal(<-rc.bodies, &got); err != nil {
		t.Fatalf("body is not a notice: %v", err)
	}
	if got.Title != notice.Title || got.Key != notice.Key || len(got.Clusters) != 2 || got.Event != notice.Event || !got.Time.Equal(notice.Time) || got.Impact != notice.Impact {
		t.Fatalf("received %+v, want %+v", got, notice)
	}
	if p := <-rc.paths; !strings.Contains(p, queryToken) || !strings.Contains(p, pathToken) {
		t.Fatalf("posted to %q: the real URL (tokens included) must reach the receiver", p)
	}
}

func TestDingTalkWebhookGetsMarkdown(t *testing.T) {
	rc := newReceiver(status(http.StatusOK, `{"errcode":0,"errmsg":"ok"}`))
	hook, client := dingTalkServer(t, rc)
	if hook.Kind() != config.WebhookDingTalk {
		t.Fatalf("kind %q", hook.Kind())
	}
	if err := New(hook, zerolog.Nop(), WithHTTPClient(client)).Send(context.Background(), notice); err != nil {
		t.Fatalf("Send: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(<-rc.bodies, &got); err != nil {
		t.Fatal(err)
	}
	md, _ := got["markdown"].(map[string]any)
	title, _ := md["title"].(string)
	text, _ := md["text"].(string)
	if got["msgtype"] != "markdown" || len(got) != 2 || len(md) != 2 {
		t.Fatalf("body %v: want exactly {msgtype: markdown, markdown: {title, text}}", got)
	}
	if title != Prefix+notice.Title {
		t.Fatalf("title %q", title)
	}
	for _, want := range []string{"### " + Prefix, notice.Impact, "`key-abc`", "c1, c2", "DisableKey", "alice", "acs.kms/ev-1", "rec-1", "2026-11-27T02:00:00Z"} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
	if p := <-rc.paths; p != "/robot/send?access_token="+queryToken {
		t.Fatalf("posted to %q", p)
	}
}

func TestRetriesServerErrorsThenSucceeds(t *testing.T) {
	rc := newReceiver(status(http.StatusServiceUnavailable, "busy"), status(http.StatusTooManyRequests, "slow down"), status(http.StatusOK, "ok"))
	if err := New(genericServer(t, rc), zerolog.Nop(), fastRetry(4)).Send(context.Background(), notice); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if n := rc.calls.Load(); n != 3 {
		t.Fatalf("%d posts, want 3 (503, 429, 200)", n)
	}
}

func TestClientErrorsAreNotRetried(t *testing.T) {
	for _, code := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound} {
		rc := newReceiver(status(code, "no"))
		err := New(genericServer(t, rc), zerolog.Nop(), fastRetry(4)).Send(context.Background(), notice)
		var de *DeliveryError
		if !errors.As(err, &de) || de.Status != code || de.Attempts != 1 || de.Temporary {
			t.Fatalf("status %d: err %#v, want one attempt, a permanent DeliveryError", code, err)
		}
		if n := rc.calls.Load(); n != 1 {
			t.Fatalf("status %d: %d posts, want 1", code, n)
		}
	}
}

func TestDingTalkErrcodes(t *testing.T) {
	rc := newReceiver(status(http.StatusOK, `{"errcode":130101,"errmsg":"send too fast"}`), status(http.StatusOK, `{"errcode":0,"errmsg":"ok"}`))
	hook, client := dingTalkServer(t, rc)
	if err := New(hook, zerolog.Nop(), WithHTTPClient(client), fastRetry(3)).Send(context.Background(), notice); err != nil {
		t.Fatalf("throttled then ok: %v", err)
	}
	if rc.calls.Load() != 2 {
		t.Fatalf("%d posts, want 2", rc.calls.Load())
	}

	rc = newReceiver(status(http.StatusOK, `{"errcode":310000,"errmsg":"keywords not in content"}`))
	hook, client = dingTalkServer(t, rc)
	err := New(hook, zerolog.Nop(), WithHTTPClient(client), fastRetry(3)).Send(context.Background(), notice)
	var de *DeliveryError
	if !errors.As(err, &de) || de.Attempts != 1 || de.Temporary || !strings.Contains(err.Error(), "310000") || !strings.Contains(err.Error(), "keywords not in content") {
		t.Fatalf("errcode 310000: %v, want one attempt and the errcode in the error", err)
	}
}

func TestTokenNeverInErrorsOrLogs(t *testing.T) {
	var logs bytes.Buffer
	log := zerolog.New(&logs)

	// A hostile receiver echoes the URL it was called with.
	echo := func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, "failed "+r.URL.String()+" token="+r.URL.Query().Get("token"))
	}
	rc := newReceiver(echo)
	hook := genericServer(t, rc)
	errs := []error{New(hook, log, fastRetry(2)).Send(context.Background(), notice)}

	// A network error: nobody listens any more.
	ts := httptest.NewServer(http.NotFoundHandler())
	dead := webhook(t, ts.URL+"/hooks/"+pathToken+"?token="+queryToken)
	ts.Close()
	errs = append(errs, New(dead, log, fastRetry(2)).Send(context.Background(), notice))

	// An attempt timeout.
	slow := newReceiver(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	errs = append(errs, New(genericServer(t, slow), log, fastRetry(2), WithTimeout(50*time.Millisecond)).Send(context.Background(), notice))

	// DingTalk, whose token is in the query.
	rc = newReceiver(echo)
	dt, client := dingTalkServer(t, rc)
	errs = append(errs, New(dt, log, fastRetry(1), WithHTTPClient(client)).Send(context.Background(), notice))

	for i, err := range errs {
		var de *DeliveryError
		if !errors.As(err, &de) {
			t.Fatalf("case %d: err %v, want a DeliveryError", i, err)
		}
		if i < 3 && (!de.Temporary || de.Attempts != 2) {
			t.Errorf("case %d: %+v, want a temporary failure after 2 attempts", i, de)
		}
		msg := err.Error()
		if strings.Contains(msg, queryToken) || strings.Contains(msg, pathToken) {
			t.Errorf("case %d: error contains a token: %s", i, msg)
		}
		if !strings.Contains(msg, "REDACTED") {
			t.Errorf("case %d: error does not name the webhook by its redacted form: %s", i, msg)
		}
		t.Logf("case %d: %s", i, msg)
	}
	if strings.Contains(logs.String(), queryToken) || strings.Contains(logs.String(), pathToken) {
		t.Fatalf("log contains a token:\n%s", logs.String())
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	elsewhere := newReceiver(status(http.StatusOK, "ok"))
	other := httptest.NewServer(elsewhere)
	t.Cleanup(other.Close)
	rc := newReceiver(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	})
	err := New(genericServer(t, rc), zerolog.Nop(), fastRetry(3)).Send(context.Background(), notice)
	var de *DeliveryError
	if !errors.As(err, &de) || de.Status != http.StatusTemporaryRedirect || de.Attempts != 1 {
		t.Fatalf("redirect: %v, want a permanent failure with status 307", err)
	}
	if elsewhere.calls.Load() != 0 {
		t.Fatal("the redirect was followed")
	}
}

func TestNoticeIsLoggedWithOrWithoutWebhook(t *testing.T) {
	for _, tt := range []struct {
		sev   policy.Severity
		level string
	}{{policy.Critical, "error"}, {policy.Warning, "warn"}, {policy.Info, "info"}} {
		var logs bytes.Buffer
		n := notice
		n.Severity = tt.sev
		if err := New(config.Webhook{}, zerolog.New(&logs)).Send(context.Background(), n); err != nil {
			t.Fatalf("no webhook: %v", err)
		}
		var line map[string]any
		if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
			t.Fatalf("log %q: %v", logs.String(), err)
		}
		if line["level"] != tt.level || line["title"] != notice.Title || line["event"] != "acs.kms/ev-1" || line["message"] != "notice" || line["impact"] != notice.Impact {
			t.Fatalf("severity %s logged %v", tt.sev, line)
		}
	}
}

func TestContextEndStopsRetries(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	rc := newReceiver(func(w http.ResponseWriter, _ *http.Request) {
		cancel()
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	err := New(genericServer(t, rc), zerolog.Nop(), fastRetry(10)).Send(ctx, notice)
	if err == nil || rc.calls.Load() != 1 {
		t.Fatalf("err %v after %d posts, want a failure after 1", err, rc.calls.Load())
	}
}

// TestNoticeLogLineHasTheIndexedFields: the Log Service alert on critical notices (infra/sls)
// reads these fields of the "notice" line.
func TestNoticeLogLineHasTheIndexedFields(t *testing.T) {
	rc := newReceiver(status(http.StatusOK, "ok"))
	hook := genericServer(t, rc)
	var b bytes.Buffer
	n := notice
	n.Severity, n.RecordID = policy.Critical, "trail-event-1"
	if err := New(hook, zerolog.New(&b)).Send(context.Background(), n); err != nil {
		t.Fatalf("Send: %v", err)
	}
	<-rc.bodies
	var line map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(b.Bytes()), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(l, &m) == nil && m["message"] == "notice" {
			line = m
		}
	}
	if line == nil {
		t.Fatalf("no notice line in %s", b.String())
	}
	for _, f := range LogFields {
		if _, ok := line[f]; !ok {
			t.Errorf("notice line lacks %q: %v", f, line)
		}
	}
	if line["severity"] != "critical" {
		t.Fatalf("severity = %v", line["severity"])
	}
}
