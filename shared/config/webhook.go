package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// WebhookKind selects the body format of alerts.
type WebhookKind string

// Webhook kinds.
const (
	// WebhookGeneric receives rekey's own JSON.
	WebhookGeneric WebhookKind = "generic"
	// WebhookDingTalk is a DingTalk custom robot (https://oapi.dingtalk.com/robot/send?access_token=...),
	// which needs DingTalk's message format.
	WebhookDingTalk WebhookKind = "dingtalk"
)

// Webhook is where alerts are posted. The URL may carry a token, so every printed form (String,
// GoString, JSON) shows it redacted; URL returns the real one for the sender only.
type Webhook struct {
	url  *url.URL
	kind WebhookKind
}

// ParseWebhook validates a webhook URL: https (http only for a loopback host, the local twin), a host,
// no user info. Errors never contain the URL.
func ParseWebhook(s string) (Webhook, error) {
	u, err := url.Parse(s)
	if err != nil {
		// *url.Error repeats the whole URL: report only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return Webhook{}, fmt.Errorf("is not a URL: %v", err)
	}
	switch {
	case u.User != nil:
		return Webhook{}, errors.New("must not carry user:password (put tokens where the receiver expects them)")
	case u.Host == "" || u.Hostname() == "":
		return Webhook{}, errors.New("has no host")
	case u.Scheme == "https":
	case u.Scheme == "http" && loopbackHost(u.Hostname()):
	case u.Scheme == "http":
		return Webhook{}, fmt.Errorf("uses http to %s: alerts must go over https (http only to a loopback host)", u.Hostname())
	default:
		return Webhook{}, fmt.Errorf("scheme %q: want https", u.Scheme)
	}
	kind := WebhookGeneric
	if strings.EqualFold(u.Hostname(), "oapi.dingtalk.com") && strings.HasPrefix(u.Path, "/robot/send") {
		kind = WebhookDingTalk
	}
	return Webhook{url: u, kind: kind}, nil
}

func loopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// IsSet reports whether a webhook is configured.
func (w Webhook) IsSet() bool { return w.url != nil }

// Kind returns the body format ("" when unset).
func (w Webhook) Kind() WebhookKind { return w.kind }

// URL returns the full URL, token included: pass it to the HTTP client only, never to a log.
func (w Webhook) URL() string {
	if w.url == nil {
		return ""
	}
	return w.url.String()
}

// String returns the URL with its query and fragment replaced by "REDACTED", and its path too unless
// it is DingTalk's (some services put the token in the path); "" when unset.
func (w Webhook) String() string {
	if w.url == nil {
		return ""
	}
	r := *w.url
	if w.kind != WebhookDingTalk && r.Path != "" && r.Path != "/" {
		r.Path, r.RawPath = "/REDACTED", ""
	}
	if r.RawQuery != "" || r.ForceQuery {
		r.RawQuery = "REDACTED"
	}
	if r.Fragment != "" {
		r.Fragment, r.RawFragment = "REDACTED", ""
	}
	return r.String()
}

// GoString redacts like String, so %#v does not print the token either.
func (w Webhook) GoString() string { return fmt.Sprintf("config.Webhook{%q, %q}", w.String(), w.kind) }

// MarshalJSON encodes the redacted form.
func (w Webhook) MarshalJSON() ([]byte, error) {
	if w.url == nil {
		return []byte("null"), nil
	}
	return json.Marshal(map[string]string{"url": w.String(), "kind": string(w.kind)})
}
