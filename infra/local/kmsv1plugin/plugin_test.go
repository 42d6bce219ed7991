package kmsv1plugin

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	kmsapi "k8s.io/kms/apis/v1beta1"

	"github.com/rekey-dev/rekey/shared/kms/kmsfake"
)

// TestPluginRoundTrip: over its unix socket the plugin answers Version as the API server's KMS v1
// client requires, encrypts a DEK under the key's primary version and decrypts it after a
// rotation (the blob names its version).
func TestPluginRoundTrip(t *testing.T) {
	fake := kmsfake.New()
	const key = "key-1"
	fake.CreateKey(key)
	svc, err := NewService(fake, key)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Serve(filepath.Join(t.TempDir(), "kms-v1.sock"), svc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	conn, err := grpc.NewClient("unix://"+p.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := kmsapi.NewKeyManagementServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	v, err := c.Version(ctx, &kmsapi.VersionRequest{Version: APIVersion})
	if err != nil || v.GetVersion() != "v1beta1" || v.GetRuntimeName() != RuntimeName {
		t.Fatalf("version %+v, %v", v, err)
	}
	dek := bytes.Repeat([]byte{7}, 32)
	enc, err := c.Encrypt(ctx, &kmsapi.EncryptRequest{Version: APIVersion, Plain: dek})
	if err != nil || len(enc.GetCipher()) == 0 || bytes.Contains(enc.GetCipher(), dek) {
		t.Fatalf("encrypt: %v", err)
	}
	fake.Rotate(key)
	dec, err := c.Decrypt(ctx, &kmsapi.DecryptRequest{Version: APIVersion, Cipher: enc.GetCipher()})
	if err != nil || !bytes.Equal(dec.GetPlain(), dek) {
		t.Fatalf("decrypt after a rotation: %v", err)
	}
	if _, err := c.Encrypt(ctx, &kmsapi.EncryptRequest{Version: APIVersion}); err == nil {
		t.Error("empty plaintext: want an error")
	}
	if _, err := NewService(nil, key); err == nil {
		t.Error("nil client: want an error")
	}
}
