package verify

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
)

func TestKMSLayer(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(f *kmsfake.Fake)
		key     string
		want    Status
		reasons []string
	}{
		{"enabled", nil, "key-1", Pass, []string{"is Enabled", "canary GenerateDataKey -> Decrypt round trip"}},
		{"rotated", func(f *kmsfake.Fake) { f.Rotate("key-1") }, "key-1", Pass, []string{"primary version key-1-v2"}},
		{"disabled", func(f *kmsfake.Fake) { f.SetState("key-1", kms.KeyStateDisabled) }, "key-1", Fail, []string{"is Disabled", "cannot encrypt or decrypt", "EnableKey"}},
		{"pending deletion", func(f *kmsfake.Fake) { f.SetState("key-1", kms.KeyStatePendingDeletion) }, "key-1", Fail, []string{"PendingDeletion", "CancelKeyDeletion"}},
		{"unknown key", nil, "nope", Fail, []string{"does not exist"}},
		{"canary broken", func(f *kmsfake.Fake) { f.SetError(kmsfake.OpDecrypt, errors.New("boom")) }, "key-1", Fail, []string{"canary Decrypt failed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := kmsfake.New()
			f.CreateKey("key-1")
			if tt.setup != nil {
				tt.setup(f)
			}
			r, err := Verify(context.Background(), Inputs{KMS: f, KeyID: tt.key, Layers: []string{LayerKMS}})
			if err != nil {
				t.Fatal(err)
			}
			l := r.Layer(LayerKMS)
			// The kms layer alone is no evidence: the verdict is FAIL even when the key is fine.
			if l.Status != tt.want || r.Verdict != Fail {
				t.Fatalf("status %s verdict %s, want %s and FAIL: %v", l.Status, r.Verdict, tt.want, l.Reasons)
			}
			text := strings.Join(l.Reasons, "\n")
			for _, want := range tt.reasons {
				if !strings.Contains(text, want) {
					t.Errorf("reasons %q lack %q", text, want)
				}
			}
		})
	}
}

func TestDisabledKeySkipsCanary(t *testing.T) {
	f := kmsfake.New()
	f.CreateKey("key-1")
	f.SetState("key-1", kms.KeyStateDisabled)
	CheckKey(context.Background(), f, "key-1")
	if n := f.Calls(kmsfake.OpGenerateDataKey); n != 0 {
		t.Fatalf("canary ran %d times on a disabled key", n)
	}
}
