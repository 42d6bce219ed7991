package kmsstack_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	kmsv2api "k8s.io/kms/apis/v2"

	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/shared/kmsplugin"
)

// dial is a KMS v2 gRPC client of a plugin socket, as kube-apiserver's.
func dial(t *testing.T, socket string) kmsv2api.KeyManagementServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", socket, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return kmsv2api.NewKeyManagementServiceClient(conn)
}

func grpcStatus(t *testing.T, c kmsv2api.KeyManagementServiceClient) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.Status(ctx, &kmsv2api.StatusRequest{})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.Healthz != kmsplugin.HealthzOK || st.KeyId == "" {
		t.Fatalf("Status = %+v", st)
	}
	return st.KeyId
}

func TestStackDefaultIsOneVersionInstance(t *testing.T) {
	ctx := context.Background()
	st, err := kmsstack.Start(ctx, kmsstack.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Stop()
	if n := len(st.Providers()); n != 1 {
		t.Fatalf("default stack has %d providers, want 1", n)
	}
	if s := st.Sockets(); len(s) != 1 || s[0] != st.Socket {
		t.Fatalf("Sockets() = %v, want [%s]", s, st.Socket)
	}
	v1, err := st.PrimaryVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := grpcStatus(t, dial(t, st.Socket)); got != v1 || st.KeyIDFor(0, v1) != v1 {
		t.Fatalf("default plugin key_id = %q, KeyIDFor = %q, want the version %s", got, st.KeyIDFor(0, v1), v1)
	}
}

func TestStackInstancesAreIndependent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := kmsstack.Start(ctx, kmsstack.Options{Dir: dir, StatusInterval: 50 * time.Millisecond, Plugins: []kmsstack.PluginOptions{
		{},
		{KeyIDFormat: kmsstack.KeyIDOpaque, AdoptAfter: time.Hour},
	}})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			st.Stop()
		}
	}()
	sockets := st.Sockets()
	if len(sockets) != 2 || len(st.Providers()) != 2 || sockets[0] != st.Socket || sockets[0] == sockets[1] {
		t.Fatalf("Sockets() = %v (Socket %s), %d providers; want two sockets, the first Socket", sockets, st.Socket, len(st.Providers()))
	}
	for _, s := range sockets {
		fi, err := os.Stat(s)
		if err != nil {
			t.Fatalf("socket %s: %v", s, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("socket %s has mode %v, want 0600", s, fi.Mode().Perm())
		}
	}
	a, b := dial(t, sockets[0]), dial(t, sockets[1])
	v1, err := st.PrimaryVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	opaque1 := st.KeyIDFor(1, v1)
	if got := grpcStatus(t, a); got != v1 {
		t.Fatalf("instance 0 key_id = %q, want %s", got, v1)
	}
	if got := grpcStatus(t, b); got != opaque1 || got == v1 || !strings.HasPrefix(got, kmsstack.OpaqueKeyIDPrefix) {
		t.Fatalf("instance 1 key_id = %q, want the opaque %q", got, opaque1)
	}

	// A rotation: instance 0 follows within a few of its intervals, instance 1 holds for an hour.
	v2, err := st.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "instance 0 to adopt the new version", func() bool { return grpcStatus(t, a) == v2 })
	if got := grpcStatus(t, b); got != opaque1 {
		t.Fatalf("instance 1 key_id after the rotation = %q, want still %q", got, opaque1)
	}

	// Instance 1 writes under the version KMS used and reads instance 0's writes.
	encB, err := b.Encrypt(ctx, &kmsv2api.EncryptRequest{Plaintext: []byte("seed-b"), Uid: "uid-1"})
	if err != nil || encB.KeyId != st.KeyIDFor(1, v2) {
		t.Fatalf("instance 1 Encrypt = %v, %v; want key_id %q", encB, err, st.KeyIDFor(1, v2))
	}
	encA, err := a.Encrypt(ctx, &kmsv2api.EncryptRequest{Plaintext: []byte("seed-a"), Uid: "uid-2"})
	if err != nil || encA.KeyId != v2 {
		t.Fatalf("instance 0 Encrypt = %v, %v; want key_id %s", encA, err, v2)
	}
	for _, tc := range []struct {
		name string
		c    kmsv2api.KeyManagementServiceClient
		enc  *kmsv2api.EncryptResponse
		want string
	}{{"0 reads 1", a, encB, "seed-b"}, {"1 reads 0", b, encA, "seed-a"}} {
		dec, err := tc.c.Decrypt(ctx, &kmsv2api.DecryptRequest{Ciphertext: tc.enc.Ciphertext, KeyId: tc.enc.KeyId, Annotations: tc.enc.Annotations, Uid: "uid-3"})
		if err != nil || string(dec.GetPlaintext()) != tc.want {
			t.Fatalf("%s: Decrypt = %q, %v", tc.name, dec.GetPlaintext(), err)
		}
	}

	// Frozen, instance 0 holds v2 though KMS (and its own Encrypt) moved on to v3.
	st.FreezeStatus(0, true)
	v3, err := st.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	enc3, err := a.Encrypt(ctx, &kmsv2api.EncryptRequest{Plaintext: []byte("seed"), Uid: "uid-4"})
	if err != nil || enc3.KeyId != v3 {
		t.Fatalf("frozen instance 0 Encrypt = %v, %v; want the key_id of the version KMS used, %s", enc3, err, v3)
	}
	time.Sleep(200 * time.Millisecond) // a few Status intervals
	if got := grpcStatus(t, a); got != v2 {
		t.Fatalf("frozen instance 0 key_id = %q, want %s", got, v2)
	}
	st.FreezeStatus(0, false)
	if got := grpcStatus(t, a); got != v3 {
		t.Fatalf("instance 0 key_id after unfreezing = %q, want %s", got, v3)
	}

	st.Stop()
	stopped = true
	for _, s := range sockets {
		if _, err := os.Stat(s); !os.IsNotExist(err) {
			t.Fatalf("socket %s after Stop: %v, want it removed", s, err)
		}
	}
}

func TestStackRejectsNegativePluginIntervals(t *testing.T) {
	_, err := kmsstack.Start(context.Background(), kmsstack.Options{Dir: t.TempDir(),
		Plugins: []kmsstack.PluginOptions{{AdoptAfter: -time.Second}}})
	if err == nil || !strings.Contains(err.Error(), "negative") {
		t.Fatalf("Start with a negative AdoptAfter: %v", err)
	}
}

func TestFreezeStatusOfAMissingInstancePanics(t *testing.T) {
	st, err := kmsstack.Start(context.Background(), kmsstack.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Stop()
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "no plugin instance 1") {
			t.Fatalf("FreezeStatus(1) on a one-instance stack: recovered %v, want a panic naming instance 1", r)
		}
	}()
	st.FreezeStatus(1, true)
}
