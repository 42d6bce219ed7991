package kmsfake_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
	"github.com/rekey-dev/rekey/shared/retry"
)

func TestFakeBehavesLikeKMS(t *testing.T) {
	ctx := context.Background()
	f := kmsfake.New()
	v1 := f.CreateKey("key-a")
	md, err := f.DescribeKey(ctx, "key-a")
	if err != nil || md.PrimaryKeyVersion != v1 || !md.Enabled() {
		t.Fatalf("DescribeKey = %+v, %v", md, err)
	}
	encCtx := map[string]string{"k8s-kms-plugin": "rekey"}
	enc1, err := f.Encrypt(ctx, "key-a", []byte("dek-1"), encCtx)
	if err != nil || enc1.KeyVersionID != v1 {
		t.Fatalf("Encrypt = %v, %v", enc1, err)
	}
	v2 := f.Rotate("key-a")
	enc2, err := f.Encrypt(ctx, "key-a", []byte("dek-2"), nil)
	if err != nil || enc2.KeyVersionID != v2 || v2 == v1 {
		t.Fatalf("Encrypt after Rotate = %v, %v", enc2, err)
	}
	dec, err := f.Decrypt(ctx, enc1.CiphertextBlob, encCtx)
	if err != nil || !bytes.Equal(dec.Plaintext, []byte("dek-1")) || dec.KeyVersionID != v1 {
		t.Fatalf("Decrypt(old blob) = %v, %v", dec, err)
	}
	if _, err := f.Decrypt(ctx, enc1.CiphertextBlob, nil); err == nil {
		t.Fatal("Decrypt without the encryption context succeeded")
	}
	if _, err := f.Decrypt(ctx, "garbage", nil); err == nil {
		t.Fatal("Decrypt of garbage succeeded")
	}
	versions, err := f.ListKeyVersions(ctx, "key-a")
	if err != nil || len(versions) != 2 || versions[1].KeyVersionID != v2 {
		t.Fatalf("ListKeyVersions = %+v, %v", versions, err)
	}
	dk, err := f.GenerateDataKey(ctx, "key-a")
	if err != nil || len(dk.Plaintext) != 32 {
		t.Fatalf("GenerateDataKey = %v, %v", dk, err)
	}
	if dec, err := f.Decrypt(ctx, dk.CiphertextBlob, nil); err != nil || !bytes.Equal(dec.Plaintext, dk.Plaintext) {
		t.Fatalf("Decrypt(data key) = %v, %v", dec, err)
	}

	f.SetState("key-a", kms.KeyStateDisabled)
	if _, err := f.Encrypt(ctx, "key-a", []byte("x"), nil); !kms.IsKeyDisabled(err) {
		t.Fatalf("Encrypt with a disabled key: %v", err)
	}
	if _, err := f.Decrypt(ctx, enc2.CiphertextBlob, nil); !kms.IsKeyDisabled(err) {
		t.Fatalf("Decrypt with a disabled key: %v", err)
	}
	f.SetState("key-a", kms.KeyStatePendingDeletion)
	if md, _ := f.DescribeKey(ctx, "key-a"); md.DeleteDate.IsZero() {
		t.Fatal("PendingDeletion without a DeleteDate")
	}
	if _, err := f.GenerateDataKey(ctx, "key-a"); !kms.IsKeyPendingDeletion(err) {
		t.Fatalf("GenerateDataKey with a key pending deletion: %v", err)
	}
	if _, err := f.DescribeKey(ctx, "nope"); !kms.IsKeyNotFound(err) || retry.Classify(err) != retry.NotFound {
		t.Fatalf("DescribeKey(unknown) = %v", err)
	}
	if got := f.Calls(kmsfake.OpEncrypt); got != 3 {
		t.Fatalf("Calls(Encrypt) = %d, want 3", got)
	}
}

func TestFakeInjectedErrorsAndHooks(t *testing.T) {
	ctx := context.Background()
	f := kmsfake.New()
	f.CreateKey("k")
	boom := errors.New("boom")
	f.FailNext(kmsfake.OpDescribeKey, kmsfake.ServiceUnavailable(), boom)
	if _, err := f.DescribeKey(ctx, "k"); retry.Classify(err) != retry.Retriable {
		t.Fatalf("first queued error = %v, want retriable", err)
	}
	if _, err := f.DescribeKey(ctx, "k"); !errors.Is(err, boom) {
		t.Fatalf("second queued error = %v", err)
	}
	if _, err := f.DescribeKey(ctx, "k"); err != nil {
		t.Fatalf("after the queue: %v", err)
	}
	f.SetError(kmsfake.OpDecrypt, boom)
	for range 2 {
		if _, err := f.Decrypt(ctx, "x", nil); !errors.Is(err, boom) {
			t.Fatalf("sticky error = %v", err)
		}
	}
	f.SetError(kmsfake.OpDecrypt, nil)

	f.SetHook(kmsfake.OpEncrypt, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := f.Encrypt(cctx, "k", []byte("x"), nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blocked Encrypt = %v", err)
	}
}

func TestFakeStampsDatesWithItsClock(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(t0)
	f := kmsfake.New()
	f.Clock = clk
	f.CreateKey("k")
	clk.SetTime(t0.Add(time.Hour))
	v2 := f.Rotate("k")
	md, err := f.DescribeKey(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if !md.CreationDate.Equal(t0) || !md.LastRotationDate.Equal(t0.Add(time.Hour)) || md.PrimaryKeyVersion != v2 {
		t.Fatalf("DescribeKey = created %v, rotated %v; want %v and %v", md.CreationDate, md.LastRotationDate, t0, t0.Add(time.Hour))
	}
}
