package kmsplugin_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/kms/pkg/service"

	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
	"github.com/rekey-dev/rekey/shared/kmsplugin"
)

func TestStatusToleratesAKMSBlip(t *testing.T) {
	u := newUnit(t, nil) // default grace period, fake clock
	ctx := context.Background()
	if st := u.status(t); st.Healthz != kmsplugin.HealthzOK {
		t.Fatalf("healthy Status = %+v", st)
	}

	// KMS goes away: within the grace period after the last success, Status stays ok.
	u.fake.SetError(kmsfake.OpDescribeKey, kmsfake.ServiceUnavailable())
	if err := u.svc.Refresh(ctx); err == nil {
		t.Fatal("Refresh while KMS is unreachable returned nil")
	}
	if st := u.status(t); st.Healthz != kmsplugin.HealthzOK || st.KeyID != u.v1 {
		t.Fatalf("Status right after a KMS blip = %+v, want ok and %s", st, u.v1)
	}
	u.clock.Step(kmsplugin.DefaultHealthGracePeriod - time.Second)
	_ = u.svc.Refresh(ctx)
	if st := u.status(t); st.Healthz != kmsplugin.HealthzOK {
		t.Fatalf("Status %v into the blip = %+v, want ok", kmsplugin.DefaultHealthGracePeriod-time.Second, st)
	}

	// Past the grace period the problem is reported, with the last key_id.
	u.clock.Step(2 * time.Second)
	st := u.status(t)
	if !strings.Contains(st.Healthz, "kms unreachable") || st.KeyID != u.v1 {
		t.Fatalf("Status after the grace period = %+v, want kms unreachable and %s", st, u.v1)
	}
	if !strings.Contains(u.logs.String(), "status stays ok during the grace period") ||
		!strings.Contains(u.logs.String(), "still unreachable after the grace period") {
		t.Fatalf("logs lack the grace period transitions:\n%s", u.logs)
	}

	// Back: ok at the next refresh, and a new blip gets a new grace period.
	u.fake.SetError(kmsfake.OpDescribeKey, nil)
	if err := u.svc.Refresh(ctx); err != nil {
		t.Fatalf("Refresh after KMS is back: %v", err)
	}
	if st := u.status(t); st.Healthz != kmsplugin.HealthzOK {
		t.Fatalf("Status after recovery = %+v", st)
	}
	u.fake.SetError(kmsfake.OpDescribeKey, kmsfake.ServiceUnavailable())
	_ = u.svc.Refresh(ctx)
	if st := u.status(t); st.Healthz != kmsplugin.HealthzOK {
		t.Fatalf("Status at the start of a second blip = %+v, want ok", st)
	}
}

func TestGracePeriodCountsFromTheLastSuccessfulCall(t *testing.T) {
	u := newUnit(t, func(o *kmsplugin.ServiceOptions) { o.HealthGracePeriod = 20 * time.Second })
	ctx := context.Background()
	u.status(t)
	u.fake.SetError(kmsfake.OpDescribeKey, kmsfake.ServiceUnavailable())
	u.clock.Step(15 * time.Second)
	_ = u.svc.Refresh(ctx)
	// The API server's Encrypt still goes through: KMS is reachable, the grace restarts.
	enc, err := u.svc.Encrypt(ctx, "uid-1", []byte("dek"))
	if err != nil {
		t.Fatal(err)
	}
	u.clock.Step(15 * time.Second)
	if st := u.status(t); st.Healthz != kmsplugin.HealthzOK {
		t.Fatalf("Status 15s after a successful Encrypt = %+v, want ok", st)
	}
	if _, err := u.svc.Decrypt(ctx, "uid-2", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: enc.KeyID}); err != nil {
		t.Fatal(err)
	}
	u.clock.Step(15 * time.Second)
	if st := u.status(t); st.Healthz != kmsplugin.HealthzOK {
		t.Fatalf("Status 15s after a successful Decrypt = %+v, want ok", st)
	}
	u.clock.Step(6 * time.Second)
	if st := u.status(t); !strings.Contains(st.Healthz, "kms unreachable") {
		t.Fatalf("Status 21s after the last success = %+v, want kms unreachable", st)
	}
}

func TestDefiniteProblemsSkipTheGracePeriod(t *testing.T) {
	for name, breakIt := range map[string]func(f *kmsfake.Fake){
		"disabled": func(f *kmsfake.Fake) { f.SetState(fakeKey, kms.KeyStateDisabled) },
		"denied": func(f *kmsfake.Fake) {
			f.SetError(kmsfake.OpDescribeKey, kms.NewAPIError(http.StatusForbidden, "Forbidden.NoPermission", "not authorized"))
		},
		"not found": func(f *kmsfake.Fake) {
			f.SetError(kmsfake.OpDescribeKey, kms.NewAPIError(http.StatusNotFound, kms.CodeKeyNotFound, "gone"))
		},
	} {
		t.Run(name, func(t *testing.T) {
			u := newUnit(t, nil)
			u.status(t)
			breakIt(u.fake)
			_ = u.svc.Refresh(context.Background())
			if st := u.status(t); st.Healthz == kmsplugin.HealthzOK {
				t.Fatalf("Status right after a definite problem = %+v, want it reported at once", st)
			}
		})
	}
}

func TestNegativeGracePeriodReportsAtOnce(t *testing.T) {
	u := newUnit(t, func(o *kmsplugin.ServiceOptions) { o.HealthGracePeriod = -1 })
	u.status(t)
	u.fake.SetError(kmsfake.OpDescribeKey, kmsfake.ServiceUnavailable())
	_ = u.svc.Refresh(context.Background())
	if st := u.status(t); !strings.Contains(st.Healthz, "kms unreachable") {
		t.Fatalf("Status without a grace period = %+v, want kms unreachable at once", st)
	}
}

// sizedBlobs makes every ciphertext exactly size bytes by padding the fake's blob with '~' (not
// a base64url character), and strips the padding again in Decrypt.
type sizedBlobs struct {
	*kmsfake.Fake
	size int
}

func (c sizedBlobs) Encrypt(ctx context.Context, keyID string, plaintext []byte, encCtx map[string]string) (kms.EncryptResult, error) {
	r, err := c.Fake.Encrypt(ctx, keyID, plaintext, encCtx)
	if err == nil && len(r.CiphertextBlob) < c.size {
		r.CiphertextBlob += strings.Repeat("~", c.size-len(r.CiphertextBlob))
	}
	return r, err
}

func (c sizedBlobs) Decrypt(ctx context.Context, blob string, encCtx map[string]string) (kms.DecryptResult, error) {
	return c.Fake.Decrypt(ctx, strings.TrimRight(blob, "~"), encCtx)
}

func TestCiphertextLimitIsUpstreams(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		size int
		ok   bool
	}{{kmsplugin.MaxCiphertextBytes - 1, true}, {kmsplugin.MaxCiphertextBytes, true}, {kmsplugin.MaxCiphertextBytes + 1, false}} {
		f := kmsfake.New()
		v1 := f.CreateKey(fakeKey)
		svc, err := kmsplugin.NewService(sizedBlobs{Fake: f, size: tc.size}, fakeKey, kmsplugin.ServiceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		enc, err := svc.Encrypt(ctx, "uid-1", []byte("dek"))
		if tc.ok != (err == nil) {
			t.Fatalf("Encrypt with a %d-byte ciphertext: %v, want ok=%v", tc.size, err, tc.ok)
		}
		if !tc.ok {
			if !strings.Contains(err.Error(), "KMS v2 limit") {
				t.Fatalf("Encrypt error = %v", err)
			}
			// The API server never sends more, but a longer ciphertext is refused before KMS.
			before := f.Calls(kmsfake.OpDecrypt)
			long := []byte(strings.Repeat("~", tc.size))
			if _, err := svc.Decrypt(ctx, "uid-2", &service.DecryptRequest{Ciphertext: long, KeyID: v1}); err == nil ||
				!strings.Contains(err.Error(), "KMS v2 limit") || f.Calls(kmsfake.OpDecrypt) != before {
				t.Fatalf("Decrypt of a %d-byte ciphertext: %v (KMS called %d times)", tc.size, err, f.Calls(kmsfake.OpDecrypt)-before)
			}
			continue
		}
		if len(enc.Ciphertext) != tc.size {
			t.Fatalf("ciphertext is %d bytes, want %d", len(enc.Ciphertext), tc.size)
		}
		got, err := svc.Decrypt(ctx, "uid-2", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: enc.KeyID})
		if err != nil || string(got) != "dek" {
			t.Fatalf("Decrypt of a %d-byte ciphertext = %q, %v", tc.size, got, err)
		}
	}
}
