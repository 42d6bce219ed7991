package alicloud

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkcredentials "github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
)

// lookup is an environment for ChainOptions.Getenv.
func lookup(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// rrsaEnv is a complete RRSA environment with its token file.
func rrsaEnv(t *testing.T, token string) map[string]string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		EnvRoleARN:         "acs:ram::5068000000000001:role/rekey-kms-plugin",
		EnvOIDCProviderARN: "acs:ram::5068000000000001:oidc-provider/ack-rrsa-c0ffee",
		EnvOIDCTokenFile:   file,
	}
}

func TestDefaultCredentialsSelection(t *testing.T) {
	// The SDK's ECS provider refuses to be built when the process environment disables it (make test
	// does, so that nothing asks the metadata address); selection alone sends nothing.
	t.Setenv(EnvECSMetadataDisabled, "")
	ak := map[string]string{EnvAccessKeyID: "LTAIchain", EnvAccessKeySecret: "chain-secret"}
	sts := map[string]string{EnvAccessKeyID: "STS.chain", EnvAccessKeySecret: "chain-secret", EnvSecurityToken: "chain-token"}
	merge := func(ms ...map[string]string) map[string]string {
		out := map[string]string{}
		for _, m := range ms {
			for k, v := range m {
				out[k] = v
			}
		}
		return out
	}
	rrsa := rrsaEnv(t, "oidc-token")
	tests := []struct {
		name       string
		env        map[string]string
		wantSource string
		wantErr    []string
	}{
		{"env access key", ak, SourceEnvAccessKey, nil},
		{"env sts token", sts, SourceEnvSTSToken, nil},
		{"env wins over rrsa", merge(rrsa, ak), SourceEnvAccessKey, nil},
		{"rrsa", rrsa, SourceOIDC, nil},
		{"rrsa wins over ecs", merge(rrsa, map[string]string{EnvECSMetadata: "some-role"}), SourceOIDC, nil},
		{"nothing: ecs ram role", map[string]string{}, SourceECSRAMRole, nil},
		{"ecs role named", map[string]string{EnvECSMetadata: "rekey-node"}, SourceECSRAMRole, nil},
		{"partial env is an error", map[string]string{EnvAccessKeyID: "LTAIchain"}, "", []string{EnvAccessKeySecret}},
		{"token alone is an error", map[string]string{EnvSecurityToken: "t"}, "", []string{EnvAccessKeyID, EnvAccessKeySecret}},
		{"sts id without token", map[string]string{EnvAccessKeyID: "STS.x", EnvAccessKeySecret: "s"}, "", []string{EnvSecurityToken}},
		{"partial rrsa is an error", map[string]string{EnvRoleARN: rrsa[EnvRoleARN]}, "",
			[]string{EnvOIDCProviderARN, EnvOIDCTokenFile}},
		{"ecs disabled", map[string]string{EnvECSMetadataDisabled: "TRUE"}, "", []string{"none found", EnvAccessKeyID, EnvRoleARN}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := DefaultCredentials(ChainOptions{Getenv: lookup(tt.env), STSEndpoint: stsHost})
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("DefaultCredentials() = %s, want an error", p.Source())
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("error %q does not name %s", err, w)
					}
				}
				if strings.Contains(err.Error(), "chain-secret") {
					t.Fatalf("error %q shows the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("DefaultCredentials(): %v", err)
			}
			if p.Source() != tt.wantSource {
				t.Fatalf("Source() = %q, want %q", p.Source(), tt.wantSource)
			}
		})
	}
}

func TestEnvCredentials(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want Credentials
	}{
		{map[string]string{EnvAccessKeyID: " LTAIenv\n", EnvAccessKeySecret: "env-secret"},
			Credentials{AccessKeyID: "LTAIenv", AccessKeySecret: "env-secret"}},
		{map[string]string{EnvAccessKeyID: "STS.env", EnvAccessKeySecret: "env-secret", EnvSecurityToken: "env-token"},
			Credentials{AccessKeyID: "STS.env", AccessKeySecret: "env-secret", SecurityToken: "env-token"}},
	} {
		p, err := DefaultCredentials(ChainOptions{Getenv: lookup(tc.env)})
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.Retrieve(context.Background())
		if err != nil || got != tc.want {
			t.Fatalf("Retrieve() = %v, %v; want %v", got, err, tc.want)
		}
	}
	// The zero ChainOptions read the process environment.
	t.Setenv(EnvAccessKeyID, "LTAIprocess")
	t.Setenv(EnvAccessKeySecret, "process-secret")
	t.Setenv(EnvSecurityToken, "")
	p, err := DefaultCredentials(ChainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.Retrieve(context.Background()); err != nil || got.AccessKeyID != "LTAIprocess" {
		t.Fatalf("Retrieve() = %v, %v", got, err)
	}
}

// stsServer answers AssumeRoleWithOIDC with a new STS credential each time, valid for valid.
type stsServer struct {
	valid  time.Duration
	calls  atomic.Int32
	mu     sync.Mutex
	tokens []string
	form   map[string]string
}

func (s *stsServer) install(t *testing.T) {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.Method != http.MethodPost || r.URL.Query().Get("Action") != "AssumeRoleWithOIDC" {
			http.Error(w, `{"Code":"InvalidParameter","Message":"bad request","RequestId":"r0"}`, http.StatusBadRequest)
			return
		}
		n := s.calls.Add(1)
		s.mu.Lock()
		s.tokens = append(s.tokens, r.PostForm.Get("OIDCToken"))
		s.form = map[string]string{"RoleArn": r.PostForm.Get("RoleArn"), "OIDCProviderArn": r.PostForm.Get("OIDCProviderArn"),
			"RoleSessionName": r.PostForm.Get("RoleSessionName")}
		s.mu.Unlock()
		if r.PostForm.Get("OIDCToken") == "expired-token" {
			http.Error(w, `{"Code":"InvalidParameter.OIDCToken.Expired","Message":"The OIDC token has expired.","RequestId":"r1"}`,
				http.StatusBadRequest)
			return
		}
		exp := time.Now().Add(s.valid).UTC().Format("2006-01-02T15:04:05Z")
		fmt.Fprintf(w, `{"RequestId":"r%d","Credentials":{"AccessKeyId":"STS.oidc%d","AccessKeySecret":"oidc-secret-%d",`+
			`"SecurityToken":"oidc-token-%d","Expiration":%q}}`, n, n, n, n, exp)
	})
	stsHandler.Store(&h)
	t.Cleanup(func() { stsHandler.Store(nil) })
}

func TestOIDCCredentialsAgainstLocalSTS(t *testing.T) {
	sts := &stsServer{valid: time.Hour}
	sts.install(t)
	env := rrsaEnv(t, "projected-sa-token-1")
	p, err := DefaultCredentials(ChainOptions{Getenv: lookup(env), STSEndpoint: stsHost})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	got, err := p.Retrieve(ctx)
	if err != nil {
		t.Fatalf("Retrieve(): %v", err)
	}
	if got != (Credentials{AccessKeyID: "STS.oidc1", AccessKeySecret: "oidc-secret-1", SecurityToken: "oidc-token-1"}) {
		t.Fatalf("Retrieve() = %#v", got)
	}
	sts.mu.Lock()
	form, tokens := sts.form, sts.tokens
	sts.mu.Unlock()
	if form["RoleArn"] != env[EnvRoleARN] || form["OIDCProviderArn"] != env[EnvOIDCProviderARN] ||
		form["RoleSessionName"] != DefaultRoleSessionName || tokens[0] != "projected-sa-token-1" {
		t.Fatalf("STS got %v, tokens %v", form, tokens)
	}
	// Valid for an hour: cached, concurrent callers included.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if c, err := p.Retrieve(ctx); err != nil || c.AccessKeyID != "STS.oidc1" {
				t.Errorf("cached Retrieve() = %v, %v", c, err)
			}
		})
	}
	wg.Wait()
	if n := sts.calls.Load(); n != 1 {
		t.Fatalf("STS called %d times for a credential valid an hour, want 1", n)
	}
}

func TestOIDCCredentialsAreRefreshedBeforeExpiry(t *testing.T) {
	sts := &stsServer{valid: 100 * time.Second} // inside the SDK's 180 s refresh window
	sts.install(t)
	env := rrsaEnv(t, "projected-sa-token-1")
	p, err := DefaultCredentials(ChainOptions{Getenv: lookup(env), STSEndpoint: stsHost})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first, err := p.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The kubelet rotates the projected token; the refresh reads the file again.
	if err := os.WriteFile(env[EnvOIDCTokenFile], []byte("projected-sa-token-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	second, err := p.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first.AccessKeyID == second.AccessKeyID || second.AccessKeyID != "STS.oidc2" {
		t.Fatalf("credentials about to expire were not refreshed: %s then %s", first, second)
	}
	sts.mu.Lock()
	defer sts.mu.Unlock()
	if len(sts.tokens) != 2 || sts.tokens[1] != "projected-sa-token-2" {
		t.Fatalf("tokens sent to STS = %v, want the rotated token on refresh", sts.tokens)
	}
}

func TestOIDCFailureIsClearAndClean(t *testing.T) {
	sts := &stsServer{valid: time.Hour}
	sts.install(t)
	env := rrsaEnv(t, "expired-token")
	p, err := DefaultCredentials(ChainOptions{Getenv: lookup(env), STSEndpoint: stsHost})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Retrieve(context.Background())
	var ce *CredentialsError
	if !errors.As(err, &ce) || ce.Source != SourceOIDC || ErrorCode(err) != "InvalidParameter.OIDCToken.Expired" {
		t.Fatalf("Retrieve() error = %v, want a CredentialsError with the STS code", err)
	}
	for _, leak := range []string{"expired-token", env[EnvRoleARN]} {
		if strings.Contains(err.Error(), leak) {
			t.Fatalf("error %q contains %q", err, leak)
		}
	}
	if !strings.Contains(err.Error(), env[EnvOIDCTokenFile]) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %q does not name the token file on one line", err)
	}

	missing := rrsaEnv(t, "x")
	missing[EnvOIDCTokenFile] = filepath.Join(t.TempDir(), "absent")
	p, err = DefaultCredentials(ChainOptions{Getenv: lookup(missing), STSEndpoint: stsHost})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Retrieve(context.Background()); err == nil || !strings.Contains(err.Error(), "absent") {
		t.Fatalf("Retrieve() with a missing token file = %v", err)
	}
}

// TestECSRAMRoleUnreachableMetadataIsAClearError checks the chain's last resort without sending
// anything to the metadata address (tests talk to loopback only): the SDK provider is replaced by
// one that fails as an unreachable metadata service does.
func TestECSRAMRoleUnreachableMetadataIsAClearError(t *testing.T) {
	t.Setenv(EnvECSMetadataDisabled, "") // the SDK provider is replaced below: nothing is sent
	p, err := DefaultCredentials(ChainOptions{Getenv: lookup(nil), MetadataTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if p.Source() != SourceECSRAMRole {
		t.Fatalf("Source() = %q, want %q", p.Source(), SourceECSRAMRole)
	}
	sp, ok := p.(*sdkProvider)
	if !ok {
		t.Fatalf("DefaultCredentials returned %T, want the SDK ECS RAM role provider", p)
	}
	if _, ok := sp.p.(*sdkcredentials.ECSRAMRoleCredentialsProvider); !ok {
		t.Fatalf("inner provider is %T, want *ECSRAMRoleCredentialsProvider", sp.p)
	}
	sp.p = failingSDKProvider{err: errors.New("dial tcp " + metadataHost + ":80: i/o timeout")}
	_, err = p.Retrieve(context.Background())
	if err == nil {
		t.Fatal("Retrieve() succeeded without a metadata service")
	}
	for _, want := range []string{"credentials from ecs ram role", metadataHost, "RAM role attached", EnvAccessKeyID, EnvRoleARN} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// failingSDKProvider is an SDK credentials provider that always fails with err.
type failingSDKProvider struct{ err error }

func (f failingSDKProvider) GetCredentials() (*sdkcredentials.Credentials, error) { return nil, f.err }
func (f failingSDKProvider) GetProviderName() string                              { return "failing" }

// blockingSDKProvider is an SDK credentials provider whose GetCredentials waits for release.
type blockingSDKProvider struct{ release chan struct{} }

func (b blockingSDKProvider) GetCredentials() (*sdkcredentials.Credentials, error) {
	<-b.release
	return &sdkcredentials.Credentials{AccessKeyId: "LTAIblock", AccessKeySecret: "block-secret"}, nil
}
func (b blockingSDKProvider) GetProviderName() string { return "blocking" }

func TestSDKProviderWaitersHonourTheirContext(t *testing.T) {
	b := blockingSDKProvider{release: make(chan struct{})}
	p := FromSDK(b, "blocking")
	holder := make(chan error, 1)
	go func() { _, err := p.Retrieve(context.Background()); holder <- err }()
	// Wait until the holder is inside GetCredentials.
	sp := p.(*sdkProvider)
	for deadline := time.Now().Add(5 * time.Second); len(sp.sem) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("holder never took the provider")
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := p.Retrieve(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiter Retrieve() = %v, want its deadline", err)
	}
	close(b.release)
	if err := <-holder; err != nil {
		t.Fatalf("holder Retrieve(): %v", err)
	}
	if c, err := p.Retrieve(context.Background()); err != nil || c.AccessKeyID != "LTAIblock" {
		t.Fatalf("Retrieve() = %v, %v", c, err)
	}
}
