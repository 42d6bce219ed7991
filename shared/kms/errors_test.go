package kms

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"

	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"

	"github.com/rekey-dev/rekey/shared/retry"
)

func TestErrorHelpers(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		check func(error) bool
		class retry.Class
	}{
		{"key not found", NewAPIError(404, CodeKeyNotFound, "The specified Key is not found."), IsKeyNotFound, retry.NotFound},
		{"alias not found", NewAPIError(404, CodeAliasNotFound, "x"), IsKeyNotFound, retry.NotFound},
		{"version not found", NewAPIError(404, CodeKeyVersionNotFound, "x"), IsKeyVersionNotFound, retry.NotFound},
		{"disabled", NewAPIError(409, CodeKeyDisabled, "x"), IsKeyDisabled, retry.Conflict},
		{"pending deletion", NewAPIError(409, CodeKeyPendingDeletion, "x"), IsKeyPendingDeletion, retry.Conflict},
		{"throttled", NewAPIError(429, CodeThrottling, "QPS Limit Exceeded"), IsThrottled, retry.Retriable},
		{"gateway throttling on 400", NewAPIError(400, "Throttling.User", "x"), IsThrottled, retry.Retriable},
		{"wrapped twice", fmt.Errorf("outer: %w", fmt.Errorf("kms describe key: %w", NewAPIError(404, CodeKeyNotFound, "x"))),
			IsKeyNotFound, retry.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.check(tt.err) {
				t.Fatalf("helper does not recognise %v", tt.err)
			}
			if got := retry.Classify(tt.err); got != tt.class {
				t.Fatalf("Classify = %v, want %v", got, tt.class)
			}
			var se *sdkerrors.ServerError
			if !errors.As(tt.err, &se) {
				t.Fatal("errors.As does not find the SDK ServerError")
			}
		})
	}
	if IsKeyNotFound(errors.New("Forbidden.KeyNotFound")) || ErrorCode(nil) != "" || IsKeyDisabled(context.Canceled) {
		t.Fatal("helpers match errors without a KMS code")
	}
}

func TestSanitize(t *testing.T) {
	keyID := "3a6a031d-7b2c-4c8e-9d3f-1e2d3c4b5a69"
	sig := sdkerrors.NewServerError(400, `{"Code":"SignatureDoesNotMatch","Message":"Specified signature is not matched with our calculation. server string to sign is:POST&%2F&AccessKeyId%3DLTAI%26Plaintext%3Dc2VjcmV0","RequestId":"r1"}`, "")
	got := sanitize(sig).Error()
	if strings.Contains(got, "Plaintext") || strings.Contains(got, "LTAI") || !strings.Contains(got, "SignatureDoesNotMatch (http 400)") {
		t.Fatalf("sanitized signature error = %q", got)
	}
	echo := sdkerrors.NewServerError(404, `{"Code":"Forbidden.KeyNotFound","Message":"Key `+keyID+` is not found.\nTry again.","RequestId":"r2"}`, "")
	got = sanitize(echo, keyID).Error()
	if strings.Contains(got, keyID) || !strings.Contains(got, Redact(keyID)) || strings.Contains(got, "\n") {
		t.Fatalf("sanitized echo = %q", got)
	}
	html := sdkerrors.NewServerError(502, "<html>\n<body>"+strings.Repeat("bad gateway ", 100)+"</body></html>", "")
	got = sanitize(html).Error()
	if len(got) > 400 || strings.Contains(got, "\n") || retry.Classify(sanitize(html)) != retry.Retriable {
		t.Fatalf("sanitized HTML error (%d bytes) = %q", len(got), got)
	}

	ue := &url.Error{Op: "Post", URL: "https://kms-vpc.cn-hangzhou.aliyuncs.com/?AccessKeyId=LTAI&Plaintext=c2VjcmV0&SecurityToken=tok&Signature=sig",
		Err: syscall.ECONNRESET}
	te := sanitize(ue)
	if s := te.Error(); strings.Contains(s, "?") || strings.Contains(s, "Plaintext") || s != "Post https://kms-vpc.cn-hangzhou.aliyuncs.com: "+syscall.ECONNRESET.Error() {
		t.Fatalf("sanitized url.Error = %q", s)
	}
	if retry.Classify(te) != retry.Retriable || !errors.Is(te, syscall.ECONNRESET) {
		t.Fatalf("sanitized url.Error lost its cause: class %v", retry.Classify(te))
	}
	timeout := sanitize(&url.Error{Op: "Post", URL: "https://h/?x", Err: context.DeadlineExceeded})
	if retry.Classify(timeout) != retry.Retriable {
		t.Fatal("per-call timeout is not retriable")
	}

	ce := sdkerrors.NewClientError(sdkerrors.JsonUnmarshalErrorCode, sdkerrors.JsonUnmarshalErrorMessage,
		errors.New(`readObjectStart: expect { ... |{"Plaintext":"c2VjcmV0"}|`))
	got = sanitize(ce).Error()
	if strings.Contains(got, "c2VjcmV0") || retry.Classify(sanitize(ce)) != retry.Permanent {
		t.Fatalf("sanitized client error = %q", got)
	}
	if sanitize(nil) != nil {
		t.Fatal("sanitize(nil) != nil")
	}
	if e := NewAPIError(http.StatusConflict, CodeKeyDisabled, "disabled"); e.Error() != "Rejected.Disabled (http 409): disabled [request fake-request]" {
		t.Fatalf("APIError.Error() = %q", e.Error())
	}
}
