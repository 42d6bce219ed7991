// Package notify delivers policy notices (critical alerts, recovery notices, notes) to the
// configured webhook and to the log.
//
// The log is the fallback channel: every notice is logged (zerolog, at a level that follows its
// severity) before delivery is tried, so a notice is never lost silently when the webhook is unset
// or unreachable. The body follows config.Webhook's kind: a generic webhook receives the notice as
// JSON (policy.Notice's fields), a DingTalk custom robot its markdown message format. Each attempt
// has its own timeout; throttling (429), server errors (5xx) and network errors are retried with
// backoff through package retry; other 4xx answers are not. Redirects are not followed (they could
// carry the URL's token elsewhere), and no error or log line contains the URL's token: the URL
// appears only in config.Webhook's redacted form.
package notify
