package notify

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/policy"
)

// DingTalkMessage is a DingTalk custom robot's markdown message.
type DingTalkMessage struct {
	MsgType  string           `json:"msgtype"`
	Markdown DingTalkMarkdown `json:"markdown"`
}

// DingTalkMarkdown is the markdown part of a DingTalkMessage.
type DingTalkMarkdown struct {
	// Title is what the chat shows in its preview.
	Title string `json:"title"`
	// Text is the message, in DingTalk's markdown subset.
	Text string `json:"text"`
}

// Prefix starts every DingTalk title and text: a robot secured by custom keywords accepts a
// message only when it contains one, so configure "rekey" as the keyword.
const Prefix = "[rekey] "

// Body encodes a notice for a webhook kind: the notice as JSON for a generic webhook, a markdown
// message for DingTalk.
func Body(kind config.WebhookKind, n policy.Notice) ([]byte, error) {
	switch kind {
	case config.WebhookDingTalk:
		return json.Marshal(DingTalk(n))
	case config.WebhookGeneric, "":
		return json.Marshal(n)
	default:
		return nil, fmt.Errorf("unknown webhook kind %q", kind)
	}
}

// DingTalk renders a notice as a DingTalk markdown message.
func DingTalk(n policy.Notice) DingTalkMessage {
	title := Prefix + n.Title
	var b strings.Builder
	fmt.Fprintf(&b, "### %s\n\n", title)
	if n.Impact != "" {
		fmt.Fprintf(&b, "**Impact**: %s\n\n", n.Impact)
	}
	line := func(label, value string) {
		if value != "" {
			fmt.Fprintf(&b, "- **%s**: %s\n", label, value)
		}
	}
	line("Severity", string(n.Severity))
	if n.Key != "" {
		line("Key", "`"+n.Key+"`")
	}
	line("Clusters", strings.Join(n.Clusters, ", "))
	line("Action", n.Action)
	line("Actor", n.Actor)
	line("Source IP", n.SourceIP)
	if n.Account != "" || n.Region != "" {
		line("Account / region", n.Account+" / "+n.Region)
	}
	if !n.Time.IsZero() {
		line("Time", n.Time.UTC().Format(time.RFC3339))
	}
	if n.Event.ID != "" {
		ev := n.Event.String()
		if n.RecordID != "" {
			ev += " (ActionTrail eventId " + n.RecordID + ")"
		}
		line("Event", ev)
	}
	return DingTalkMessage{MsgType: "markdown", Markdown: DingTalkMarkdown{Title: title, Text: b.String()}}
}
