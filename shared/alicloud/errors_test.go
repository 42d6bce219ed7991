package alicloud

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"

	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"

	"github.com/rekey-dev/rekey/shared/retry"
)

func TestSanitize(t *testing.T) {
	keyID := "3a6a031d-7b2c-4c8e-9d3f-1e2d3c4b5a69"
	sig := sdkerrors.NewServerError(400, `{"Code":"SignatureDoesNotMatch","Message":"Specified signature is not matched with our calculation. server string to sign is:POST&%2F&AccessKeyId%3DLTAI%26Plaintext%3Dc2VjcmV0","RequestId":"r1"}`, "")
	got := Sanitize(sig, "kms").Error()
	if strings.Contains(got, "Plaintext") || strings.Contains(got, "LTAI") || !strings.Contains(got, "SignatureDoesNotMatch (http 400)") {
		t.Fatalf("sanitized signature error = %q", got)
	}
	echo := sdkerrors.NewServerError(404, `{"Code":"Forbidden.KeyNotFound","Message":"Key `+keyID+` is not found.\nTry again.","RequestId":"r2"}`, "")
	got = Sanitize(echo, "kms", keyID).Error()
	if strings.Contains(got, keyID) || !strings.Contains(got, Redact(keyID)) || strings.Contains(got, "\n") {
		t.Fatalf("sanitized echo = %q", got)
	}
	html := sdkerrors.NewServerError(502, "<html>\n<body>"+strings.Repeat("bad gateway ", 100)+"</body></html>", "")
	got = Sanitize(html, "kms").Error()
	if len(got) > 400 || strings.Contains(got, "\n") || retry.Classify(Sanitize(html, "kms")) != retry.Retriable {
		t.Fatalf("sanitized HTML error (%d bytes) = %q", len(got), got)
	}

	ue := &url.Error{Op: "Post", URL: "https://kms-vpc.cn-hangzhou.aliyuncs.com/?AccessKeyId=LTAI&Plaintext=c2VjcmV0&SecurityToken=tok&Signature=sig",
		Err: syscall.ECONNRESET}
	te := Sanitize(ue, "kms")
	if s := te.Error(); strings.Contains(s, "?") || strings.Contains(s, "Plaintext") || s != "Post https://kms-vpc.cn-hangzhou.aliyuncs.com: "+syscall.ECONNRESET.Error() {
		t.Fatalf("sanitized url.Error = %q", s)
	}
	if retry.Classify(te) != retry.Retriable || !errors.Is(te, syscall.ECONNRESET) {
		t.Fatalf("sanitized url.Error lost its cause: class %v", retry.Classify(te))
	}
	timeout := Sanitize(&url.Error{Op: "Post", URL: "https://h/?x", Err: context.DeadlineExceeded}, "kms")
	if retry.Classify(timeout) != retry.Retriable {
		t.Fatal("per-call timeout is not retriable")
	}

	ce := sdkerrors.NewClientError(sdkerrors.JsonUnmarshalErrorCode, sdkerrors.JsonUnmarshalErrorMessage,
		errors.New(`readObjectStart: expect { ... |{"Plaintext":"c2VjcmV0"}|`))
	got = Sanitize(ce, "kms").Error()
	if strings.Contains(got, "c2VjcmV0") || retry.Classify(Sanitize(ce, "kms")) != retry.Permanent {
		t.Fatalf("sanitized client error = %q", got)
	}
	if Sanitize(nil, "kms") != nil {
		t.Fatal("Sanitize(nil) != nil")
	}
	if e := NewAPIError(http.StatusConflict, "Rejected.Disabled", "disabled"); e.Error() != "Rejected.Disabled (http 409): disabled [request fake-request]" {
		t.Fatalf("APIError.Error() = %q", e.Error())
	}
}

func TestAPIErrorReadsLowerCaseROABodies(t *testing.T) {
	se := sdkerrors.NewServerError(403, `{"code":"ErrorRamPolicyForbidden","message":"no\npermission","requestId":"r-cs"}`, "")
	err := Sanitize(se, "cs")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != "ErrorRamPolicyForbidden" || ae.Message != "no permission" || ae.RequestID != "r-cs" {
		t.Fatalf("Sanitize(CS error) = %#v", ae)
	}
	if ErrorCode(err) != "ErrorRamPolicyForbidden" || retry.Classify(err) != retry.Denied {
		t.Fatalf("ErrorCode = %q, class %v", ErrorCode(err), retry.Classify(err))
	}
}

func TestThrottlingCodes(t *testing.T) {
	for code, want := range map[string]bool{"Throttling": true, "Throttling.User": true, "Rejected.Throttling": true,
		"Forbidden.KeyNotFound": false, "": false} {
		if IsThrottlingCode(code) != want {
			t.Errorf("IsThrottlingCode(%q) = %v", code, !want)
		}
	}
	if got := NewAPIError(400, "Throttling.User", "x").HttpStatus(); got != http.StatusTooManyRequests {
		t.Fatalf("throttling on 400: HttpStatus = %d", got)
	}
}
