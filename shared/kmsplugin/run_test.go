package kmsplugin_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkkms "github.com/aliyun/alibaba-cloud-sdk-go/services/kms"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	kmsv2 "k8s.io/kms/apis/v2"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/kmsplugin"
)

const testRegion = "cn-hangzhou"

var pluginCred = kmsapi.Credential{
	AccessKeyID:     "STS.NkmsPluginTEST01",
	AccessKeySecret: "plugin-secret-do-not-log",
	SecurityToken:   "CAIS-plugin-token-do-not-log",
	Identity: kmsapi.Identity{
		Type: kmsapi.IdentityAssumedRole, AccountID: kmsapi.DefaultAccountID, PrincipalID: "300000000000009:kms-plugin",
		RoleName: "rekey-kms-plugin", RoleID: "300000000000009", SessionName: "kms-plugin",
	},
}

// stack is the local KMS server, an admin SDK client and a plugin served by Run over a unix
// socket, with a fake clock driving the status refresh.
type stack struct {
	srv    *kmsapi.Server
	ts     *httptest.Server
	keyID  string
	clock  *clocktesting.FakeClock
	socket string
	client kmsv2.KeyManagementServiceClient
	logs   *syncBuffer
	stop   func() error
}

// shortTempDir keeps unix socket paths under the 108-byte limit.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func newStack(t *testing.T, wrap func(http.Handler) http.Handler) *stack {
	t.Helper()
	srv, err := kmsapi.NewServer(kmsapi.Options{Region: testRegion, Credentials: []kmsapi.Credential{pluginCred, kmsapi.DevCredential()}})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	keyID, _, err := srv.EnsureKey("alias/k8s-secrets")
	if err != nil {
		t.Fatalf("EnsureKey: %v", err)
	}
	var h http.Handler = srv
	if wrap != nil {
		h = wrap(srv)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return &stack{srv: srv, ts: ts, keyID: keyID, socket: filepath.Join(shortTempDir(t), "kms.sock"), logs: &syncBuffer{},
		clock: clocktesting.NewFakeClock(time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC))}
}

func (s *stack) kmsClient(t *testing.T) *kms.SDKClient {
	t.Helper()
	c, err := kms.NewSDKClient(kms.Config{
		Region:   testRegion,
		Endpoint: strings.TrimPrefix(s.ts.URL, "http://"),
		Scheme:   kms.SchemeHTTP,
		Credentials: kms.Credentials{AccessKeyID: pluginCred.AccessKeyID, AccessKeySecret: pluginCred.AccessKeySecret,
			SecurityToken: pluginCred.SecurityToken},
		CallTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatalf("NewSDKClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// start runs the plugin and connects a gRPC client to it.
func (s *stack) start(t *testing.T, tweak func(*kmsplugin.Options)) {
	t.Helper()
	log := zerolog.New(s.logs).Level(zerolog.DebugLevel)
	opts := kmsplugin.Options{
		SocketPath: s.socket,
		Client:     s.kmsClient(t),
		KeyID:      s.keyID,
		Service:    kmsplugin.ServiceOptions{Clock: s.clock, Logger: &log, RefreshTimeout: 2 * time.Second},
	}
	if tweak != nil {
		tweak(&opts)
	}
	serving := make(chan struct{})
	opts.OnServing = func() { close(serving) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- kmsplugin.Run(ctx, opts) }()
	select {
	case <-serving:
	case err := <-done:
		cancel()
		t.Fatalf("Run returned before serving: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("plugin did not start")
	}
	conn, err := grpc.NewClient("unix://"+s.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		cancel()
		t.Fatalf("grpc client: %v", err)
	}
	s.client = kmsv2.NewKeyManagementServiceClient(conn)
	var stopped bool
	var stopErr error
	s.stop = func() error {
		if !stopped {
			stopped = true
			cancel() // the client stays connected: Run must stop gracefully with it
			stopErr = <-done
			_ = conn.Close()
		}
		return stopErr
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func (s *stack) status(t *testing.T) *kmsv2.StatusResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.client.Status(ctx, &kmsv2.StatusRequest{})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.Version != "v2" {
		t.Fatalf("Status version %q", st.Version)
	}
	return st
}

func (s *stack) encrypt(t *testing.T, dek []byte) *kmsv2.EncryptResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := s.client.Encrypt(ctx, &kmsv2.EncryptRequest{Plaintext: dek, Uid: "enc-uid"})
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	return resp
}

func (s *stack) decrypt(enc *kmsv2.EncryptResponse, keyID string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := s.client.Decrypt(ctx, &kmsv2.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: keyID, Uid: "dec-uid",
		Annotations: enc.Annotations})
	if err != nil {
		return nil, err
	}
	return resp.Plaintext, nil
}

// tick advances the fake clock one status interval once the refresh ticker exists.
func (s *stack) tick(t *testing.T) {
	t.Helper()
	eventually(t, "the refresh ticker", s.clock.HasWaiters)
	s.clock.Step(kmsplugin.DefaultStatusInterval)
}

func (s *stack) admin(t *testing.T) *sdkkms.Client {
	t.Helper()
	dev := kmsapi.DevCredential()
	c, err := sdkkms.NewClientWithAccessKey(testRegion, dev.AccessKeyID, dev.AccessKeySecret)
	if err != nil {
		t.Fatal(err)
	}
	c.Domain = strings.TrimPrefix(s.ts.URL, "http://")
	c.GetConfig().WithScheme("HTTP")
	return c
}

func TestPluginOverGRPCAgainstLocalKMS(t *testing.T) {
	s := newStack(t, nil)
	s.start(t, nil)
	admin := s.admin(t)

	fi, err := os.Stat(s.socket)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s: mode %v, %v; want a 0600 socket", s.socket, fi.Mode(), err)
	}

	descReq := sdkkms.CreateDescribeKeyRequest()
	descReq.KeyId = s.keyID
	md, err := admin.DescribeKey(descReq)
	if err != nil {
		t.Fatal(err)
	}
	v1 := md.KeyMetadata.PrimaryKeyVersion
	st := s.status(t)
	if st.Healthz != "ok" || st.KeyId != v1 {
		t.Fatalf("Status = %+v, want ok and the primary version %s", st, v1)
	}

	dek := bytes.Repeat([]byte{7}, 32)
	enc1 := s.encrypt(t, dek)
	if enc1.KeyId != v1 || len(enc1.Ciphertext) >= kmsplugin.MaxCiphertextBytes ||
		string(enc1.Annotations[kmsplugin.AnnotationKeyID]) != s.keyID {
		t.Fatalf("Encrypt = key_id %s, %d-byte ciphertext, annotations %q", enc1.KeyId, len(enc1.Ciphertext), enc1.Annotations)
	}
	if got, err := s.decrypt(enc1, v1); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("Decrypt = %x, %v", got, err)
	}

	// Rotate the key: after a status refresh Status and new Encrypts use the new version, and the
	// old ciphertext still decrypts.
	rot := sdkkms.CreateCreateKeyVersionRequest()
	rot.KeyId = s.keyID
	rresp, err := admin.CreateKeyVersion(rot)
	if err != nil {
		t.Fatal(err)
	}
	v2 := rresp.KeyVersion.KeyVersionId
	s.tick(t)
	eventually(t, "Status to report the new version", func() bool { return s.status(t).KeyId == v2 })
	enc2 := s.encrypt(t, dek)
	if enc2.KeyId != v2 {
		t.Fatalf("Encrypt after rotation used %s, want %s", enc2.KeyId, v2)
	}
	if got, err := s.decrypt(enc1, v1); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("Decrypt of the old ciphertext = %x, %v", got, err)
	}
	if got, err := s.decrypt(enc2, v2); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("Decrypt of the new ciphertext = %x, %v", got, err)
	}
	if _, err := s.decrypt(enc1, v2); err == nil || !strings.Contains(err.Error(), "was made by key version") {
		t.Fatalf("Decrypt with a mismatched key_id: %v", err)
	}

	// Disable the key: Status is not ok but keeps the key_id; Encrypt fails clearly.
	dis := sdkkms.CreateDisableKeyRequest()
	dis.KeyId = s.keyID
	if _, err := admin.DisableKey(dis); err != nil {
		t.Fatal(err)
	}
	s.tick(t)
	eventually(t, "Status to report the disabled key", func() bool { return s.status(t).Healthz != "ok" })
	st = s.status(t)
	if !strings.Contains(st.Healthz, "Disabled") || st.KeyId != v2 {
		t.Fatalf("Status of a disabled key = %+v, want a healthz naming Disabled and key_id %s", st, v2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = s.client.Encrypt(ctx, &kmsv2.EncryptRequest{Plaintext: dek, Uid: "u"})
	if err == nil || !strings.Contains(err.Error(), "Rejected.Disabled") {
		t.Fatalf("Encrypt with a disabled key: %v", err)
	}

	en := sdkkms.CreateEnableKeyRequest()
	en.KeyId = s.keyID
	if _, err := admin.EnableKey(en); err != nil {
		t.Fatal(err)
	}
	s.tick(t)
	eventually(t, "Status to recover", func() bool { return s.status(t).Healthz == "ok" })
	if st := s.status(t); st.KeyId != v2 {
		t.Fatalf("Status after EnableKey = %+v", st)
	}
	if got, err := s.decrypt(enc1, v1); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("Decrypt after EnableKey = %x, %v", got, err)
	}

	if err := s.stop(); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if _, err := os.Lstat(s.socket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind after shutdown: %v", err)
	}
	logs := s.logs.String()
	for _, secret := range []string{pluginCred.AccessKeySecret, pluginCred.SecurityToken, pluginCred.AccessKeyID,
		string(enc1.Ciphertext), s.keyID, v1, v2} {
		if strings.Contains(logs, secret) {
			t.Fatalf("plugin logs contain %q:\n%s", secret, logs)
		}
	}
}

func TestPluginStartsWhileKMSIsDown(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	s := newStack(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if down.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(`{"Code":"ServiceUnavailable","Message":"down","RequestId":"x"}`))
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	s.start(t, func(o *kmsplugin.Options) {
		o.Service.RefreshTimeout = 300 * time.Millisecond
	})
	if st := s.status(t); st.Healthz == "ok" || !strings.Contains(st.Healthz, "kms unreachable") || st.KeyId != "" {
		t.Fatalf("Status while KMS is down = %+v", st)
	}
	down.Store(false)
	s.tick(t)
	eventually(t, "Status to recover", func() bool { return s.status(t).Healthz == "ok" })
}

func TestRunSocketHandling(t *testing.T) {
	t.Run("stale socket is replaced", func(t *testing.T) {
		s := newStack(t, nil)
		ln, err := net.Listen("unix", s.socket)
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		_ = ln.Close()
		if _, err := os.Lstat(s.socket); err != nil {
			t.Fatalf("stale socket not left behind: %v", err)
		}
		s.start(t, nil)
		if st := s.status(t); st.Healthz != "ok" {
			t.Fatalf("Status = %+v", st)
		}
	})
	t.Run("live socket is refused", func(t *testing.T) {
		s := newStack(t, nil)
		ln, err := net.Listen("unix", s.socket)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		err = kmsplugin.Run(context.Background(), kmsplugin.Options{SocketPath: s.socket, Client: s.kmsClient(t), KeyID: s.keyID})
		if err == nil || !strings.Contains(err.Error(), "another process is serving") {
			t.Fatalf("Run on a live socket: %v", err)
		}
	})
	t.Run("regular file is refused", func(t *testing.T) {
		s := newStack(t, nil)
		if err := os.WriteFile(s.socket, []byte("not a socket"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := kmsplugin.Run(context.Background(), kmsplugin.Options{SocketPath: s.socket, Client: s.kmsClient(t), KeyID: s.keyID})
		if err == nil || !strings.Contains(err.Error(), "is not a socket") {
			t.Fatalf("Run on a regular file: %v", err)
		}
		if b, _ := os.ReadFile(s.socket); string(b) != "not a socket" {
			t.Fatal("Run changed a regular file at the socket path")
		}
	})
	t.Run("missing options", func(t *testing.T) {
		if err := kmsplugin.Run(context.Background(), kmsplugin.Options{}); err == nil {
			t.Fatal("Run without options succeeded")
		}
	})
}

func TestRunWaitsForRunningCalls(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	entered := make(chan struct{}, 1)
	s := newStack(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("Action") == "Encrypt" {
				entered <- struct{}{}
				<-release
			}
			next.ServeHTTP(w, r)
		})
	})
	t.Cleanup(unblock) // runs before the server's Close on failure
	s.start(t, nil)
	result := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := s.client.Encrypt(ctx, &kmsv2.EncryptRequest{Plaintext: []byte("dek"), Uid: "in-flight"})
		result <- err
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- s.stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) while an RPC was running", err)
	case <-time.After(200 * time.Millisecond):
	}
	unblock()
	if err := <-result; err != nil {
		t.Fatalf("in-flight Encrypt failed during graceful shutdown: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
