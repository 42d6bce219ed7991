// Command fcfunc is a tiny Function Compute function (runtime go1, fc.Start)
// that the fc package's tests build and run through the Supervisor. The
// payload's "action" selects what it does.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/aliyun/fc-runtime-go-sdk/fc"
	"github.com/aliyun/fc-runtime-go-sdk/fccontext"
)

type request struct {
	Action string `json:"action"`
	MS     int    `json:"ms"`
	N      int    `json:"n"`
	Text   string `json:"text"`
}

// fcInfo is what the "context" action reports.
type fcInfo struct {
	RequestID      string `json:"requestId"`
	AccessKeyID    string `json:"accessKeyId"`
	HasSecret      bool   `json:"hasSecret"`
	SecurityToken  string `json:"securityToken"`
	FunctionName   string `json:"functionName"`
	Handler        string `json:"handler"`
	Memory         string `json:"memory"`
	Timeout        int    `json:"timeout"`
	Region         string `json:"region"`
	AccountID      string `json:"accountId"`
	RetryCount     int    `json:"retryCount"`
	DeadlineMS     int64  `json:"deadlineMs"`
	EnvRegion      string `json:"envRegion"`
	EnvFunction    string `json:"envFunction"`
	EnvAccessKeyID string `json:"envAccessKeyId"`
	EnvCustom      string `json:"envCustom"`
	EnvLeaked      string `json:"envLeaked"`
	PID            int    `json:"pid"`
}

func handle(ctx context.Context, raw json.RawMessage) (any, error) {
	var req request
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, fmt.Errorf("bad payload: %w", err)
	}
	fcCtx, _ := fccontext.FromContext(ctx)
	switch req.Action {
	case "echo":
		return raw, nil
	case "error":
		return nil, errors.New("handler failed: " + req.Text)
	case "panic":
		panic("boom: " + req.Text)
	case "sleep":
		time.Sleep(time.Duration(req.MS) * time.Millisecond) // ignores ctx on purpose
		return map[string]int{"pid": os.Getpid()}, nil
	case "exit":
		os.Exit(3)
	case "goroutine-panic":
		done := make(chan struct{})
		go func() {
			defer close(done)
			panic("goroutine boom")
		}()
		<-done
		return nil, nil
	case "print":
		fmt.Println("fcfunc says:", req.Text)
		fmt.Fprintln(os.Stderr, "fcfunc warns:", req.Text)
		return "printed", nil
	case "fail-until":
		if fcCtx.RetryCount < req.N {
			return nil, fmt.Errorf("attempt %d fails", fcCtx.RetryCount)
		}
		return map[string]int{"succeededAt": fcCtx.RetryCount}, nil
	case "context":
		info := fcInfo{
			RequestID:      fcCtx.RequestID,
			AccessKeyID:    fcCtx.Credentials.AccessKeyId,
			HasSecret:      fcCtx.Credentials.AccessKeySecret != "",
			SecurityToken:  fcCtx.Credentials.SecurityToken,
			FunctionName:   fcCtx.Function.Name,
			Handler:        fcCtx.Function.Handler,
			Memory:         fcCtx.Function.Memory,
			Timeout:        fcCtx.Function.Timeout,
			Region:         fcCtx.Region,
			AccountID:      fcCtx.AccountId,
			RetryCount:     fcCtx.RetryCount,
			EnvRegion:      os.Getenv("FC_REGION"),
			EnvFunction:    os.Getenv("FC_FUNCTION_NAME"),
			EnvAccessKeyID: os.Getenv("ALIBABA_CLOUD_ACCESS_KEY_ID"),
			EnvCustom:      os.Getenv("CUSTOM_SETTING"),
			EnvLeaked:      os.Getenv("FCFUNC_PARENT_ONLY"),
			PID:            os.Getpid(),
		}
		if dl, ok := ctx.Deadline(); ok {
			info.DeadlineMS = dl.UnixMilli()
		}
		return info, nil
	default:
		return nil, fmt.Errorf("unknown action %q", req.Action)
	}
	return nil, nil
}

func main() {
	if os.Getenv("FAIL_AT_START") != "" {
		fmt.Fprintln(os.Stderr, "fcfunc: refusing to start: FAIL_AT_START is set")
		os.Exit(2)
	}
	fc.Start(handle)
}
