package kmsplugin_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/kms/pkg/service"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
	"github.com/rekey-dev/rekey/shared/kmsplugin"
)

const fakeKey = "3a6a031d-7b2c-4c8e-9d3f-1e2d3c4b5a69"

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type unit struct {
	fake  *kmsfake.Fake
	clock *clocktesting.FakeClock
	svc   *kmsplugin.Service
	logs  *syncBuffer
	v1    string
}

func newUnit(t *testing.T, tweak func(*kmsplugin.ServiceOptions)) *unit {
	t.Helper()
	u := &unit{fake: kmsfake.New(), clock: clocktesting.NewFakeClock(time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)), logs: &syncBuffer{}}
	u.fake.Clock = u.clock
	u.v1 = u.fake.CreateKey(fakeKey)
	log := zerolog.New(u.logs).Level(zerolog.DebugLevel)
	opts := kmsplugin.ServiceOptions{Clock: u.clock, Logger: &log}
	if tweak != nil {
		tweak(&opts)
	}
	svc, err := kmsplugin.NewService(u.fake, fakeKey, opts)
	if err != nil {
		t.Fatalf("NewService: %v", err)
	}
	u.svc = svc
	return u
}

func (u *unit) status(t *testing.T) *service.StatusResponse {
	t.Helper()
	st, err := u.svc.Status(context.Background())
	if err != nil {
		t.Fatalf("Status returned an error (it must report problems in healthz): %v", err)
	}
	if st.Version != "v2" {
		t.Fatalf("Status version = %q", st.Version)
	}
	return st
}

// eventually polls cond (no sleeping in logic; a short real wait for another goroutine).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStatusIsCachedAndRefreshedOnTheInterval(t *testing.T) {
	u := newUnit(t, nil)
	st := u.status(t)
	if st.Healthz != kmsplugin.HealthzOK || st.KeyID != u.v1 {
		t.Fatalf("first Status = %+v, want ok and %s", st, u.v1)
	}
	for range 5 {
		u.status(t)
	}
	if n := u.fake.Calls(kmsfake.OpDescribeKey); n != 1 {
		t.Fatalf("DescribeKey called %d times for 6 Status calls, want 1 (cached)", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); u.svc.Watch(ctx) }()
	defer func() { cancel(); <-done }()
	eventually(t, "the refresh ticker", u.clock.HasWaiters)

	v2 := u.fake.Rotate(fakeKey)
	if st := u.status(t); st.KeyID != u.v1 {
		t.Fatalf("Status before the refresh = %s, want the cached %s", st.KeyID, u.v1)
	}
	u.clock.Step(kmsplugin.DefaultStatusInterval)
	eventually(t, "the new key version", func() bool { return u.status(t).KeyID == v2 })
	if n := u.fake.Calls(kmsfake.OpDescribeKey); n != 2 {
		t.Fatalf("DescribeKey called %d times after one tick, want 2", n)
	}
}

func TestStatusReportsProblemsAndKeepsTheLastKeyID(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(f *kmsfake.Fake)
		healthz []string
	}{
		{"disabled", func(f *kmsfake.Fake) { f.SetState(fakeKey, kms.KeyStateDisabled) }, []string{"is Disabled", kms.Redact(fakeKey)}},
		{"pending deletion", func(f *kmsfake.Fake) { f.SetState(fakeKey, kms.KeyStatePendingDeletion) },
			[]string{"is PendingDeletion", "deletion scheduled for 2025-03-08"}},
		{"unreachable", func(f *kmsfake.Fake) { f.SetError(kmsfake.OpDescribeKey, kmsfake.ServiceUnavailable()) },
			[]string{"kms unreachable", "ServiceUnavailable"}},
		{"timeout", func(f *kmsfake.Fake) {
			f.SetHook(kmsfake.OpDescribeKey, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
		}, []string{"kms unreachable", "deadline"}},
		{"denied", func(f *kmsfake.Fake) {
			f.SetError(kmsfake.OpDescribeKey, kms.NewAPIError(http.StatusForbidden, "Forbidden.NoPermission", "not authorized"))
		}, []string{"access denied", "kms:DescribeKey"}},
		{"not found", func(f *kmsfake.Fake) {
			f.SetError(kmsfake.OpDescribeKey, kms.NewAPIError(404, kms.CodeKeyNotFound, "gone"))
		},
			[]string{"kms key not found"}},
		{"no primary version", func(f *kmsfake.Fake) {
			f.UpdateMetadata(fakeKey, func(m *kms.KeyMetadata) { m.PrimaryKeyVersion = "" })
		}, []string{"no primary key version"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUnit(t, func(o *kmsplugin.ServiceOptions) { o.RefreshTimeout = 50 * time.Millisecond })
			if st := u.status(t); st.Healthz != kmsplugin.HealthzOK {
				t.Fatalf("healthy Status = %+v", st)
			}
			tt.breakIt(u.fake)
			if err := u.svc.Refresh(context.Background()); err == nil {
				t.Fatal("Refresh of a broken key returned nil")
			}
			if strings.Contains(tt.healthz[0], "unreachable") {
				// A blip is tolerated for the grace period (see health_test.go).
				if st := u.status(t); st.Healthz != kmsplugin.HealthzOK {
					t.Fatalf("Status within the grace period = %+v", st)
				}
				u.clock.Step(kmsplugin.DefaultHealthGracePeriod + time.Second)
			}
			st := u.status(t)
			if st.Healthz == kmsplugin.HealthzOK || st.KeyID != u.v1 {
				t.Fatalf("Status = %+v, want a problem and the last key_id %s", st, u.v1)
			}
			for _, w := range tt.healthz {
				if !strings.Contains(st.Healthz, w) {
					t.Fatalf("healthz %q does not contain %q", st.Healthz, w)
				}
			}
			if strings.Contains(st.Healthz, fakeKey) || strings.Contains(st.Healthz, "\n") {
				t.Fatalf("healthz %q shows the key ID or spans lines", st.Healthz)
			}

			// Fixed: ok again on the next refresh.
			u.fake.SetError(kmsfake.OpDescribeKey, nil)
			u.fake.SetHook(kmsfake.OpDescribeKey, nil)
			u.fake.SetState(fakeKey, kms.KeyStateEnabled)
			u.fake.UpdateMetadata(fakeKey, func(m *kms.KeyMetadata) { m.PrimaryKeyVersion = u.v1 })
			if err := u.svc.Refresh(context.Background()); err != nil {
				t.Fatalf("Refresh after the fix: %v", err)
			}
			if st := u.status(t); st.Healthz != kmsplugin.HealthzOK || st.KeyID != u.v1 {
				t.Fatalf("Status after the fix = %+v", st)
			}
			if !strings.Contains(u.logs.String(), "kms key is not usable") || !strings.Contains(u.logs.String(), "kms key is usable") {
				t.Fatalf("logs lack the health transitions:\n%s", u.logs)
			}
		})
	}
}

func TestStatusBeforeAnyAnswer(t *testing.T) {
	u := newUnit(t, nil)
	u.fake.SetHook(kmsfake.OpDescribeKey, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	st, err := u.svc.Status(ctx)
	if err != nil || st.Healthz == kmsplugin.HealthzOK || st.Healthz == "" || st.KeyID != "" {
		t.Fatalf("Status while KMS never answered = %+v, %v; want a non-ok healthz and no key_id", st, err)
	}
}

func TestStatusRefreshesWhenTheCacheIsOld(t *testing.T) {
	u := newUnit(t, nil) // no Watch running
	u.status(t)
	v2 := u.fake.Rotate(fakeKey)
	u.clock.Step(kmsplugin.DefaultStatusInterval)
	if st := u.status(t); st.KeyID != u.v1 {
		t.Fatalf("Status one interval later = %s, want the cached %s", st.KeyID, u.v1)
	}
	u.clock.Step(2*kmsplugin.DefaultStatusInterval + kmsplugin.DefaultRefreshTimeout)
	if st := u.status(t); st.KeyID != v2 {
		t.Fatalf("Status with a stale cache = %s, want %s", st.KeyID, v2)
	}
}

func TestEncryptDecrypt(t *testing.T) {
	ctx := context.Background()
	u := newUnit(t, func(o *kmsplugin.ServiceOptions) { o.EncryptionContext = map[string]string{"k8s-kms-plugin": "rekey"} })
	dek := bytes.Repeat([]byte{0xAB}, 32)
	enc, err := u.svc.Encrypt(ctx, "uid-1", dek)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if enc.KeyID != u.v1 || len(enc.Ciphertext) == 0 || len(enc.Ciphertext) >= kmsplugin.MaxCiphertextBytes {
		t.Fatalf("Encrypt = key_id %s, %d-byte ciphertext", enc.KeyID, len(enc.Ciphertext))
	}
	if string(enc.Annotations[kmsplugin.AnnotationKeyID]) != fakeKey {
		t.Fatalf("annotations = %q", enc.Annotations)
	}
	for k := range enc.Annotations {
		if errs := validation.IsFullyQualifiedDomainName(nil, k); len(errs) > 0 {
			t.Fatalf("annotation key %q is not a fully qualified domain name, the API server would refuse it: %v", k, errs)
		}
	}
	got, err := u.svc.Decrypt(ctx, "uid-2", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: enc.KeyID, Annotations: enc.Annotations})
	if err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("Decrypt = %x, %v", got, err)
	}

	v2 := u.fake.Rotate(fakeKey)
	enc2, err := u.svc.Encrypt(ctx, "uid-3", dek)
	if err != nil || enc2.KeyID != v2 {
		t.Fatalf("Encrypt after rotation = %+v, %v", enc2, err)
	}
	if st := u.status(t); st.KeyID != v2 {
		t.Fatalf("Status after Encrypt saw %s = %s: the observed version was not recorded", v2, st.KeyID)
	}
	if got, err := u.svc.Decrypt(ctx, "uid-4", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: u.v1}); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("Decrypt of a ciphertext of the old version = %x, %v", got, err)
	}

	bad := []struct {
		name string
		req  *service.DecryptRequest
		want string
	}{
		{"key_id of another version", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: v2}, "was made by key version"},
		{"annotation of another key", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: u.v1,
			Annotations: map[string][]byte{kmsplugin.AnnotationKeyID: []byte("other-key-0000")}}, "the annotation names"},
		{"empty ciphertext", &service.DecryptRequest{KeyID: u.v1}, "ciphertext is empty"},
		{"empty key_id", &service.DecryptRequest{Ciphertext: enc.Ciphertext}, "key_id is empty"},
		{"garbage", &service.DecryptRequest{Ciphertext: []byte("garbage"), KeyID: u.v1}, "InvalidParameter"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := u.svc.Decrypt(ctx, "uid-x", tc.req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decrypt error = %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), u.v1) || strings.Contains(err.Error(), v2) {
				t.Fatalf("error %q shows a full key version ID", err)
			}
		})
	}

	if _, err := u.svc.Encrypt(ctx, "uid-5", nil); err == nil {
		t.Fatal("Encrypt of nothing succeeded")
	}
	if _, err := u.svc.Encrypt(ctx, "uid-6", bytes.Repeat([]byte{1}, 900)); err == nil ||
		!strings.Contains(err.Error(), "KMS v2 limit") {
		t.Fatalf("Encrypt with a ciphertext over 1 kB: %v", err)
	}
	u.fake.SetState(fakeKey, kms.KeyStateDisabled)
	_, err = u.svc.Encrypt(ctx, "uid-7", dek)
	if !kms.IsKeyDisabled(err) || !strings.Contains(err.Error(), "Rejected.Disabled") || strings.Contains(err.Error(), fakeKey) {
		t.Fatalf("Encrypt with a disabled key: %v", err)
	}
}

func TestLogsNeverCarrySecrets(t *testing.T) {
	ctx := context.Background()
	u := newUnit(t, nil)
	dek := []byte("0123456789abcdef0123456789abcdef")
	enc, err := u.svc.Encrypt(ctx, "uid-1", dek)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.svc.Decrypt(ctx, "uid-2", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: enc.KeyID}); err != nil {
		t.Fatal(err)
	}
	_, _ = u.svc.Decrypt(ctx, "uid-3", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: "wrong-version-id"})
	u.fake.Rotate(fakeKey)
	_ = u.svc.Refresh(ctx)
	u.fake.SetState(fakeKey, kms.KeyStateDisabled)
	_ = u.svc.Refresh(ctx)
	_, _ = u.svc.Encrypt(ctx, "uid-4", dek)
	_, _ = u.svc.Decrypt(ctx, "uid-5", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: enc.KeyID})

	logs := u.logs.String()
	if !strings.Contains(logs, "encrypted DEK") || !strings.Contains(logs, "kms encrypt failed") {
		t.Fatalf("expected debug and failure logs, got:\n%s", logs)
	}
	for _, secret := range []string{string(dek), base64.StdEncoding.EncodeToString(dek), string(enc.Ciphertext), fakeKey, u.v1} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs contain %q:\n%s", secret, logs)
		}
	}
}

func TestNewServiceValidates(t *testing.T) {
	if _, err := kmsplugin.NewService(nil, "k", kmsplugin.ServiceOptions{}); err == nil {
		t.Fatal("NewService without a client succeeded")
	}
	if _, err := kmsplugin.NewService(kmsfake.New(), "", kmsplugin.ServiceOptions{}); err == nil {
		t.Fatal("NewService without a key ID succeeded")
	}
	if _, err := kmsplugin.NewService(kmsfake.New(), "k", kmsplugin.ServiceOptions{StatusInterval: -1}); err == nil {
		t.Fatal("NewService with a negative interval succeeded")
	}
}

func TestConcurrentCalls(t *testing.T) {
	u := newUnit(t, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 20 {
		wg.Go(func() {
			if i%5 == 0 {
				u.fake.Rotate(fakeKey)
				if err := u.svc.Refresh(ctx); err != nil {
					errs <- err
				}
				return
			}
			enc, err := u.svc.Encrypt(ctx, "uid", []byte("dek"))
			if err != nil {
				errs <- err
				return
			}
			if _, err := u.svc.Decrypt(ctx, "uid", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: enc.KeyID}); err != nil {
				errs <- err
			}
			if _, err := u.svc.Status(ctx); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	versions, _ := u.fake.ListKeyVersions(ctx, fakeKey)
	if st := u.status(t); st.KeyID != versions[len(versions)-1].KeyVersionID {
		t.Fatalf("after concurrent rotations Status = %s, want the newest version %s", st.KeyID, versions[len(versions)-1].KeyVersionID)
	}
}
