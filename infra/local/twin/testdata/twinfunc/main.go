// Command twinfunc is a stand-in Function Compute function (runtime go1, fc.Start) for the twin's
// own tests: it answers what it was given and what it runs with, and fails on a payload whose
// "payload" or "data.eventName" asks it to.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"

	"github.com/aliyun/fc-runtime-go-sdk/fc"
	"github.com/aliyun/fc-runtime-go-sdk/fccontext"
)

type answer struct {
	Payload     json.RawMessage `json:"payload"`
	Targets     string          `json:"targets"`
	Scheme      string          `json:"scheme"`
	CSEndpoint  string          `json:"csEndpoint"`
	Webhook     bool            `json:"webhook"`
	HasSTS      bool            `json:"hasSts"`
	Function    string          `json:"function"`
	DeadlineSet bool            `json:"deadlineSet"`
}

func handle(ctx context.Context, raw json.RawMessage) (answer, error) {
	if strings.Contains(string(raw), "please-fail") {
		return answer{}, errors.New("asked to fail")
	}
	fcCtx, _ := fccontext.FromContext(ctx)
	_, hasDeadline := ctx.Deadline()
	return answer{
		Payload:     raw,
		Targets:     os.Getenv("REKEY_TARGETS"),
		Scheme:      os.Getenv("REKEY_ENDPOINT_SCHEME"),
		CSEndpoint:  os.Getenv("REKEY_CS_ENDPOINT"),
		Webhook:     os.Getenv("REKEY_WEBHOOK_URL") != "",
		HasSTS:      fcCtx.Credentials.SecurityToken != "",
		Function:    fcCtx.Function.Name,
		DeadlineSet: hasDeadline,
	}, nil
}

func main() { fc.Start(handle) }
