package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/rs/zerolog"

	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/policy"
	"github.com/rekey-dev/rekey/shared/retry"
)

// Defaults.
const (
	// DefaultTimeout bounds one delivery attempt.
	DefaultTimeout = 10 * time.Second
	// maxBody bounds what is read of a webhook's answer.
	maxBody = 4 << 10
	// maxSnippet bounds the part of an answer quoted in an error.
	maxSnippet = 200
	// dingTalkThrottled is DingTalk's errcode for "sending too fast" (20 messages a minute per robot).
	dingTalkThrottled = 130101
)

// DefaultRetryPolicy is the retry policy of deliveries: 4 attempts, 500ms doubling to 5s.
func DefaultRetryPolicy() retry.Policy {
	return retry.Policy{InitialInterval: 500 * time.Millisecond, MaxInterval: 5 * time.Second, MaxAttempts: 4, MaxRetryAfter: 30 * time.Second}
}

// Sender delivers notices to one webhook and to the log. It is safe for concurrent use.
type Sender struct {
	hook    config.Webhook
	log     zerolog.Logger
	client  *http.Client
	timeout time.Duration
	retry   retry.Policy
}

// Option adjusts a Sender.
type Option func(*Sender)

// WithHTTPClient sets the HTTP client (default: a client of its own). Its redirect policy is
// replaced: redirects are never followed.
func WithHTTPClient(c *http.Client) Option { return func(s *Sender) { s.client = c } }

// WithTimeout bounds each delivery attempt (default DefaultTimeout).
func WithTimeout(d time.Duration) Option { return func(s *Sender) { s.timeout = d } }

// WithRetryPolicy sets the retry policy (default DefaultRetryPolicy).
func WithRetryPolicy(p retry.Policy) Option { return func(s *Sender) { s.retry = p } }

// New returns a Sender for hook (unset: log only) that logs to log.
func New(hook config.Webhook, log zerolog.Logger, opts ...Option) *Sender {
	s := &Sender{hook: hook, log: log, timeout: DefaultTimeout, retry: DefaultRetryPolicy()}
	for _, o := range opts {
		o(s)
	}
	c := &http.Client{}
	if s.client != nil {
		*c = *s.client
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	s.client = c
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	return s
}

// DeliveryError is a notice the webhook did not accept. Its message names the webhook by its
// redacted form only.
type DeliveryError struct {
	// Status is the last HTTP status (0 when no answer came).
	Status int
	// Attempts is the number of posts made.
	Attempts int
	// Temporary is true when the last failure was transient (throttling, a server or network
	// error): a later try may succeed.
	Temporary bool
	msg       string
}

// Error implements error.
func (e *DeliveryError) Error() string { return e.msg }

// statusError is a webhook's unsuccessful answer; HttpStatus lets retry.Classify judge it.
type statusError struct {
	code int
	msg  string
}

// Error implements error.
func (e *statusError) Error() string { return e.msg }

// HttpStatus implements retry.StatusCoder.
func (e *statusError) HttpStatus() int { return e.code }

// Send logs the notice and, when a webhook is set, posts it there with retries. A nil error means
// the webhook accepted it (or none is set).
func (s *Sender) Send(ctx context.Context, n policy.Notice) error {
	s.logNotice(n)
	if !s.hook.IsSet() {
		return nil
	}
	body, err := Body(s.hook.Kind(), n)
	if err != nil {
		return fmt.Errorf("notify: encode %s notice for %s: %w", n.Severity, s.hook, err)
	}
	attempts, status := 0, 0
	err = retry.Do(ctx, s.retry, func(ctx context.Context) error {
		attempts++
		code, err := s.post(ctx, body)
		if code != 0 {
			status = code
		}
		return err
	}, nil)
	if err == nil {
		return nil
	}
	return &DeliveryError{
		Status:    status,
		Attempts:  attempts,
		Temporary: retry.Classify(err) == retry.Retriable,
		msg:       s.scrub(fmt.Sprintf("notify: post %s notice %q to %s webhook %s: %v", n.Severity, n.Title, s.hook.Kind(), s.hook, err)),
	}
}

// post makes one attempt and returns the HTTP status it got (0 for none).
func (s *Sender) post(ctx context.Context, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.hook.URL(), bytes.NewReader(body))
	if err != nil {
		return 0, s.redactURL(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "rekey-notify")
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, s.redactURL(err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("read answer (status %d): %w", resp.StatusCode, s.redactURL(err))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, &statusError{code: resp.StatusCode, msg: fmt.Sprintf("status %d: %s", resp.StatusCode, snippet(answer))}
	}
	if s.hook.Kind() == config.WebhookDingTalk {
		return resp.StatusCode, dingTalkResult(answer)
	}
	return resp.StatusCode, nil
}

// dingTalkResult reads DingTalk's answer, which reports failures with HTTP 200 and an errcode.
func dingTalkResult(answer []byte) error {
	var r struct {
		ErrCode *int   `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}
	if err := json.Unmarshal(answer, &r); err != nil || r.ErrCode == nil {
		return &statusError{code: http.StatusBadGateway, msg: "DingTalk answered without an errcode: " + snippet(answer)}
	}
	switch *r.ErrCode {
	case 0:
		return nil
	case dingTalkThrottled:
		return &statusError{code: http.StatusTooManyRequests, msg: fmt.Sprintf("DingTalk errcode %d (sending too fast): %s", *r.ErrCode, snippet([]byte(r.ErrMsg)))}
	default:
		return &statusError{code: http.StatusBadRequest, msg: fmt.Sprintf("DingTalk errcode %d: %s", *r.ErrCode, snippet([]byte(r.ErrMsg)))}
	}
}

// redactURL replaces the URL that *url.Error carries (the whole webhook URL, token included) by its
// redacted form, keeping the cause for classification.
func (s *Sender) redactURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = s.hook.String()
	}
	return err
}

// secrets are the parts of the webhook URL that may be or contain a token.
func (s *Sender) secrets() []string {
	u, err := url.Parse(s.hook.URL())
	if err != nil {
		return []string{s.hook.URL()}
	}
	out := []string{s.hook.URL(), u.RawQuery, u.Fragment}
	for _, vs := range u.Query() {
		out = append(out, vs...)
	}
	if s.hook.Kind() != config.WebhookDingTalk {
		out = append(out, u.EscapedPath(), u.Path)
		out = append(out, strings.Split(u.Path, "/")...)
	}
	return out
}

// scrub removes every part of the URL that may be a token from a message (a last line of defence:
// the messages are built from the redacted form already).
func (s *Sender) scrub(msg string) string {
	redacted := s.hook.String()
	for _, sec := range s.secrets() {
		if len(sec) < 6 || strings.Contains(redacted, sec) {
			continue // too short to be a token, or a part the redacted form shows anyway (host, scheme)
		}
		msg = strings.ReplaceAll(msg, sec, "REDACTED")
	}
	return msg
}

// snippet quotes the start of an answer, printable characters only.
func snippet(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, string(b))
	s = strings.TrimSpace(s)
	if r := []rune(s); len(r) > maxSnippet {
		s = string(r[:maxSnippet]) + "..."
	}
	if s == "" {
		return "(empty answer)"
	}
	return s
}

// logNotice writes the notice to the log, the fallback channel.
// LogFields are the fields of a notice's log line (message "notice") that infra/sls/index.json
// indexes: the alert on critical key notices reads severity.
var LogFields = []string{"severity", "title", "key", "clusters", "event", "recordId"}

func (s *Sender) logNotice(n policy.Notice) {
	level := zerolog.InfoLevel
	switch n.Severity {
	case policy.Critical:
		level = zerolog.ErrorLevel
	case policy.Warning:
		level = zerolog.WarnLevel
	}
	e := s.log.WithLevel(level).
		Str("severity", string(n.Severity)).
		Str("title", n.Title).
		Str("key", n.Key).
		Strs("clusters", n.Clusters).
		Str("action", n.Action).
		Str("impact", n.Impact).
		Str("actor", n.Actor).
		Str("event", n.Event.String()).
		Str("account", n.Account).
		Str("region", n.Region)
	if n.SourceIP != "" {
		e = e.Str("sourceIp", n.SourceIP)
	}
	if n.RecordID != "" {
		e = e.Str("recordId", n.RecordID)
	}
	if !n.Time.IsZero() {
		e = e.Time("time", n.Time)
	}
	if s.hook.IsSet() {
		e = e.Str("webhook", s.hook.String())
	}
	e.Msg("notice")
}
