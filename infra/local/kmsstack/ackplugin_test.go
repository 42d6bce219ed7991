package kmsstack_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/kms/pkg/service"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
	"github.com/rekey-dev/rekey/shared/kmsplugin"
)

const fakeKey = "3a6a031d-7b2c-4c8e-9d3f-1e2d3c4b5a69"

// world is a fake KMS with one key and a fake clock shared by every plugin built on it.
type world struct {
	fake  *kmsfake.Fake
	clock *clocktesting.FakeClock
	v1    string
}

func newWorld() *world {
	w := &world{fake: kmsfake.New(), clock: clocktesting.NewFakeClock(time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC))}
	w.fake.Clock = w.clock
	w.v1 = w.fake.CreateKey(fakeKey)
	return w
}

// plugin is one ACK-like plugin instance: its own inner kmsplugin.Service on the world's KMS.
type plugin struct {
	inner *kmsplugin.Service
	ack   *kmsstack.ACKPlugin
}

func (w *world) plugin(t *testing.T, opts kmsstack.ACKPluginOptions) *plugin {
	t.Helper()
	inner, err := kmsplugin.NewService(w.fake, fakeKey, kmsplugin.ServiceOptions{Clock: w.clock})
	if err != nil {
		t.Fatalf("NewService: %v", err)
	}
	opts.Clock = w.clock
	ack, err := kmsstack.NewACKPlugin(inner, fakeKey, opts)
	if err != nil {
		t.Fatalf("NewACKPlugin: %v", err)
	}
	return &plugin{inner: inner, ack: ack}
}

// rotate makes a new primary version and lets p's inner plugin see it (its Watch would on the
// next tick).
func (w *world) rotate(t *testing.T, ps ...*plugin) string {
	t.Helper()
	v := w.fake.Rotate(fakeKey)
	for _, p := range ps {
		if err := p.inner.Refresh(context.Background()); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
	}
	return v
}

func (p *plugin) statusKeyID(t *testing.T) string {
	t.Helper()
	st, err := p.ack.Status(context.Background())
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.Healthz != kmsplugin.HealthzOK || st.Version != "v2" || st.KeyID == "" {
		t.Fatalf("Status = %+v, want healthy v2 with a key_id", st)
	}
	return st.KeyID
}

func TestOpaqueKeyIDRoundTrips(t *testing.T) {
	ctx := context.Background()
	w := newWorld()
	p := w.plugin(t, kmsstack.ACKPluginOptions{KeyIDFormat: kmsstack.KeyIDOpaque})

	keyID := p.statusKeyID(t)
	if keyID == w.v1 || strings.Contains(keyID, w.v1) || !strings.HasPrefix(keyID, kmsstack.OpaqueKeyIDPrefix) {
		t.Fatalf("opaque Status key_id = %q, want an opaque %s... string, not (containing) the version %s",
			keyID, kmsstack.OpaqueKeyIDPrefix, w.v1)
	}
	if keyID != p.ack.KeyIDFor(w.v1) {
		t.Fatalf("Status key_id %q != KeyIDFor(v1) %q", keyID, p.ack.KeyIDFor(w.v1))
	}

	dek := bytes.Repeat([]byte{0xCD}, 32)
	enc, err := p.ack.Encrypt(ctx, "uid-1", dek)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if enc.KeyID != keyID {
		t.Fatalf("Encrypt key_id = %q, want the Status key_id %q (the API server would refuse the DEK)", enc.KeyID, keyID)
	}
	if got := string(enc.Annotations[kmsplugin.AnnotationKeyID]); got != fakeKey {
		t.Fatalf("Encrypt annotations = %q, want the inner plugin's %s", enc.Annotations, kmsplugin.AnnotationKeyID)
	}
	got, err := p.ack.Decrypt(ctx, "uid-2", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: enc.KeyID, Annotations: enc.Annotations})
	if err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("Decrypt with the opaque key_id = %x, %v", got, err)
	}
	// The API servers of one cluster read each other's writes, whatever their plugin's format.
	if got, err := p.ack.Decrypt(ctx, "uid-3", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: w.v1}); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("Decrypt with the bare version ID = %x, %v", got, err)
	}

	// The inner plugin's checks still hold behind the mapping.
	v2 := w.rotate(t, p)
	bad := []struct {
		name string
		req  *service.DecryptRequest
		want string
	}{
		{"key_id of another version", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: p.ack.KeyIDFor(v2)}, "was made by key version"},
		{"annotation of another key", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: keyID,
			Annotations: map[string][]byte{kmsplugin.AnnotationKeyID: []byte("other-key-0000")}}, "the annotation names"},
		{"opaque key_id that is not base64url", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: kmsstack.OpaqueKeyIDPrefix + "!!"}, "not base64url"},
		{"opaque key_id without a version", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: kmsstack.OpaqueKeyIDPrefix + "a2V5"}, "does not name"},
		{"empty key_id", &service.DecryptRequest{Ciphertext: enc.Ciphertext}, "key_id is empty"},
		{"no request", nil, "no request"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := p.ack.Decrypt(ctx, "uid-x", tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decrypt error = %v, want one containing %q", err, tc.want)
			}
		})
	}

	// The version format is rekey's own plugin's.
	pv := w.plugin(t, kmsstack.ACKPluginOptions{})
	if got := pv.statusKeyID(t); got != v2 || pv.ack.KeyIDFor(v2) != v2 {
		t.Fatalf("version-format Status key_id = %q, KeyIDFor = %q, want %s", got, pv.ack.KeyIDFor(v2), v2)
	}
	enc2, err := pv.ack.Encrypt(ctx, "uid-4", dek)
	if err != nil || enc2.KeyID != v2 {
		t.Fatalf("version-format Encrypt = %+v, %v; want key_id %s", enc2, err, v2)
	}
	// An opaque-format instance reads what a version-format one wrote, and the other way round.
	if got, err := p.ack.Decrypt(ctx, "uid-5", &service.DecryptRequest{Ciphertext: enc2.Ciphertext, KeyID: enc2.KeyID}); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("opaque instance decrypting a version-format write = %x, %v", got, err)
	}
	if got, err := pv.ack.Decrypt(ctx, "uid-6", &service.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: enc.KeyID}); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("version-format instance decrypting an opaque write = %x, %v", got, err)
	}
}

func TestStatusAdoptsANewVersionOnlyAfterAdoptAfter(t *testing.T) {
	ctx := context.Background()
	w := newWorld()
	const adopt = 30 * time.Second
	p := w.plugin(t, kmsstack.ACKPluginOptions{KeyIDFormat: kmsstack.KeyIDOpaque, AdoptAfter: adopt})
	old := p.ack.KeyIDFor(w.v1)
	if got := p.statusKeyID(t); got != old {
		t.Fatalf("first Status key_id = %q, want %q at once (no previous key_id to hold)", got, old)
	}

	v2 := w.rotate(t, p)
	if got := p.statusKeyID(t); got != old {
		t.Fatalf("Status right after the rotation = %q, want the previous %q", got, old)
	}
	// KMS encrypts under its primary: were the API server to ask now, the key_ids would differ
	// and it would refuse the DEK, as with a real plugin.
	enc, err := p.ack.Encrypt(ctx, "uid-1", []byte("dek"))
	if err != nil || enc.KeyID != p.ack.KeyIDFor(v2) {
		t.Fatalf("Encrypt while Status holds the previous key_id = %+v, %v; want the key_id of %s, the version used", enc, err, v2)
	}
	w.clock.Step(adopt - time.Second)
	if got := p.statusKeyID(t); got != old {
		t.Fatalf("Status %v after the rotation was seen = %q, want the previous %q", adopt-time.Second, got, old)
	}
	w.clock.Step(time.Second)
	if got := p.statusKeyID(t); got != p.ack.KeyIDFor(v2) {
		t.Fatalf("Status %v after the rotation was seen = %q, want the new %q", adopt, got, p.ack.KeyIDFor(v2))
	}

	// Two rotations in a row: the wait counts from the first one seen, and the newest is adopted.
	v3 := w.rotate(t, p)
	p.statusKeyID(t)
	w.clock.Step(adopt / 2)
	v4 := w.rotate(t, p)
	if got := p.statusKeyID(t); got != p.ack.KeyIDFor(v2) {
		t.Fatalf("Status after two quick rotations = %q, want still %q", got, p.ack.KeyIDFor(v2))
	}
	w.clock.Step(adopt / 2)
	if got := p.statusKeyID(t); got != p.ack.KeyIDFor(v4) {
		t.Fatalf("Status %v after %s was seen = %q, want the newest %q (not %s's)", adopt, v3, got, p.ack.KeyIDFor(v4), v3)
	}
}

func TestWatchStartsTheAdoptClock(t *testing.T) {
	w := newWorld()
	const adopt, interval = 30 * time.Second, 10 * time.Second
	p := w.plugin(t, kmsstack.ACKPluginOptions{AdoptAfter: adopt})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.ack.Watch(ctx, interval) }()
	defer func() { cancel(); <-done }()
	eventually(t, "the watch ticker", w.clock.HasWaiters)

	v2 := w.rotate(t, p)
	w.clock.Step(interval) // the plugin's own poll sees v2 here, before any API server asks
	eventually(t, "the poll to see the new version", func() bool { return p.ack.Pending() == v2 })
	w.clock.Step(adopt - interval)
	if got := p.statusKeyID(t); got != w.v1 {
		t.Fatalf("Status %v after the poll saw the rotation = %q, want %s", adopt-interval, got, w.v1)
	}
	w.clock.Step(interval)
	if got := p.statusKeyID(t); got != v2 {
		t.Fatalf("Status %v after the poll saw the rotation = %q, want %s: AdoptAfter must count from the poll, not the first Status",
			adopt, got, v2)
	}
}

func TestFreezeHoldsStatus(t *testing.T) {
	w := newWorld()
	p := w.plugin(t, kmsstack.ACKPluginOptions{})
	p.statusKeyID(t)
	p.ack.Freeze(true)
	v2 := w.rotate(t, p)
	for range 3 {
		w.clock.Step(time.Hour)
		_ = p.inner.Refresh(context.Background())
		if got := p.statusKeyID(t); got != w.v1 {
			t.Fatalf("frozen Status = %q, want %s", got, w.v1)
		}
	}
	// Even an Encrypt that sees the new primary does not move a frozen Status.
	if _, err := p.ack.Encrypt(context.Background(), "uid-1", []byte("dek")); err != nil {
		t.Fatal(err)
	}
	if got := p.statusKeyID(t); got != w.v1 {
		t.Fatalf("frozen Status after an Encrypt under %s = %q, want %s", v2, got, w.v1)
	}
	p.ack.Freeze(false)
	if got := p.statusKeyID(t); got != v2 {
		t.Fatalf("Status after Freeze(false) = %q, want %s", got, v2)
	}

	// With AdoptAfter, the time spent frozen counts: a version seen long enough ago is adopted
	// on unfreezing; one seen just now waits.
	q := w.plugin(t, kmsstack.ACKPluginOptions{AdoptAfter: time.Minute})
	q.statusKeyID(t)
	q.ack.Freeze(true)
	v3 := w.rotate(t, p, q)
	q.statusKeyID(t)
	w.clock.Step(2 * time.Minute)
	if got := q.statusKeyID(t); got != v2 {
		t.Fatalf("frozen Status past AdoptAfter = %q, want %s", got, v2)
	}
	q.ack.Freeze(false)
	if got := q.statusKeyID(t); got != v3 {
		t.Fatalf("Status on unfreezing, AdoptAfter after %s was seen = %q, want it", v3, got)
	}
}

func TestInstancesAdoptAtDifferentMoments(t *testing.T) {
	ctx := context.Background()
	w := newWorld()
	early := w.plugin(t, kmsstack.ACKPluginOptions{AdoptAfter: 10 * time.Second})
	late := w.plugin(t, kmsstack.ACKPluginOptions{KeyIDFormat: kmsstack.KeyIDOpaque, AdoptAfter: 40 * time.Second})
	early.statusKeyID(t)
	late.statusKeyID(t)

	v2 := w.rotate(t, early, late)
	early.statusKeyID(t)
	late.statusKeyID(t)
	w.clock.Step(10 * time.Second)
	e, l := early.statusKeyID(t), late.statusKeyID(t)
	if e != v2 || l != late.ack.KeyIDFor(w.v1) {
		t.Fatalf("10s after the rotation: early reports %q, late %q; want %s and %q", e, l, v2, late.ack.KeyIDFor(w.v1))
	}
	// In between, each API server writes under its own version, and reads the other's writes.
	encE, err := early.ack.Encrypt(ctx, "uid-1", []byte("dek-e"))
	if err != nil || encE.KeyID != e {
		t.Fatalf("early Encrypt = %+v, %v", encE, err)
	}
	if got, err := late.ack.Decrypt(ctx, "uid-2", &service.DecryptRequest{Ciphertext: encE.Ciphertext, KeyID: encE.KeyID}); err != nil || string(got) != "dek-e" {
		t.Fatalf("late decrypting early's write = %q, %v", got, err)
	}
	w.clock.Step(29 * time.Second)
	if l := late.statusKeyID(t); l != late.ack.KeyIDFor(w.v1) {
		t.Fatalf("39s after the rotation late reports %q, want still %q", l, late.ack.KeyIDFor(w.v1))
	}
	w.clock.Step(time.Second)
	if e, l := early.statusKeyID(t), late.statusKeyID(t); e != v2 || l != late.ack.KeyIDFor(v2) {
		t.Fatalf("40s after the rotation: early reports %q, late %q; want %s and %q", e, l, v2, late.ack.KeyIDFor(v2))
	}
}

func TestNewACKPluginValidates(t *testing.T) {
	w := newWorld()
	inner, err := kmsplugin.NewService(w.fake, fakeKey, kmsplugin.ServiceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		inner *kmsplugin.Service
		key   string
		opts  kmsstack.ACKPluginOptions
	}{
		"no inner":          {nil, fakeKey, kmsstack.ACKPluginOptions{}},
		"no key":            {inner, "", kmsstack.ACKPluginOptions{}},
		"unknown format":    {inner, fakeKey, kmsstack.ACKPluginOptions{KeyIDFormat: 7}},
		"negative adoption": {inner, fakeKey, kmsstack.ACKPluginOptions{AdoptAfter: -time.Second}},
	} {
		if _, err := kmsstack.NewACKPlugin(tc.inner, tc.key, tc.opts); err == nil {
			t.Errorf("NewACKPlugin with %s succeeded", name)
		}
	}
}

// eventually polls cond (a short real wait for another goroutine).
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
