package kms

import (
	"context"
	"errors"
	"fmt"
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
