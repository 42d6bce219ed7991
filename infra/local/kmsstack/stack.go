// Package kmsstack runs the Alibaba Cloud side of the local twin: the KMS API stand-in on a
// loopback port (state in a file, so a restart loses no key) and one or more KMS v2 plugin
// instances, each on its own unix socket, calling that KMS as an assumed-role identity shaped like
// ACK's aliyuncsmanagedsecurityrole. Each instance is rekey's plugin (kmsplugin.Service) wrapped in
// an ACKPlugin, which can spell the key_id like an ACK managed plugin might (KeyIDOpaque) and adopt
// a new key version late (AdoptAfter, FreezeStatus), as the plugins of ACK's kube-apiserver
// replicas do. A control plane started with Provider() (or one of Providers()) really encrypts
// Secrets with KMS key versions.
package kmsstack

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	sdkkms "github.com/aliyun/alibaba-cloud-sdk-go/services/kms"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/kmsapi"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// Names the stack uses.
const (
	// ProviderName is the KMS v2 provider name in the encryption config.
	ProviderName = "alibaba-kms"
	// PluginRole is the RAM role the plugin's calls are recorded under, as on ACK.
	PluginRole = "aliyuncsmanagedsecurityrole"
	keyAlias   = "alias/rekey-local"
)

// Options configure Start; the zero value works.
type Options struct {
	// Dir holds the KMS state file and the plugin socket (default: a new temp dir removed by Stop).
	Dir string
	// StatusInterval is how often a plugin instance refreshes the key's primary version, unless
	// its PluginOptions say otherwise (default 1s).
	StatusInterval time.Duration
	// Plugins lists the KMS v2 plugin instances, one per kube-apiserver (default: one instance
	// with zero PluginOptions, rekey's plugin as is).
	Plugins []PluginOptions
	// Credentials are accepted by the KMS API besides the stack's own (a function's role, say).
	Credentials []kmsapi.Credential
	// OnRecord, when set, receives every ActionTrail record of the KMS API (kmsapi.Options.OnRecord:
	// it must return quickly and must not call the KMS API).
	OnRecord func(kmsapi.Record)
	// PluginLog, when set, receives the plugins' log at debug level, one JSON line per Write, from
	// several goroutines: it must be safe for concurrent use. With several instances each line
	// carries the instance's index ("plugin_instance").
	PluginLog io.Writer
}

// PluginOptions configure one KMS v2 plugin instance; the zero value is rekey's plugin as is.
type PluginOptions struct {
	// KeyIDFormat is how the instance spells the key_id (default KeyIDVersion: the version ID).
	KeyIDFormat KeyIDFormat
	// StatusInterval is how often the instance refreshes the key's primary version (default
	// Options.StatusInterval).
	StatusInterval time.Duration
	// AdoptAfter is how long after the instance first sees a new primary version its Status keeps
	// reporting the previous key_id (ACKPluginOptions.AdoptAfter; default 0: at once).
	AdoptAfter time.Duration
}

// Stack is a running KMS API stand-in and KMS v2 plugin.
type Stack struct {
	// Region, AccountID and KeyID describe the key Secrets are encrypted with.
	Region, AccountID, KeyID string
	// Endpoint is the KMS API's host:port (scheme HTTP).
	Endpoint string
	// Socket is the first plugin instance's unix socket path.
	Socket string
	// Admin is a root-account credential (rotate, disable, look up events).
	Admin kms.Credentials
	// PluginCreds is the plugin's STS credential (assumed role PluginRole).
	PluginCreds kms.Credentials

	dir, state string
	removeDir  bool
	opts       Options
	mu         sync.Mutex
	server     *kmsapi.Server
	httpSrv    *http.Server
	serveDone  chan struct{}
	plugins    []*pluginInstance // set by Start, never changed after
}

func credentials() (admin, plugin kmsapi.Credential) {
	admin = kmsapi.DevCredential()
	plugin = kmsapi.Credential{
		AccessKeyID: "STS.localcsmanagedrole", AccessKeySecret: "local-plugin-secret", SecurityToken: "local-plugin-sts-token",
		Identity: kmsapi.Identity{Type: kmsapi.IdentityAssumedRole, AccountID: kmsapi.DefaultAccountID, RoleName: PluginRole,
			RoleID: "300000000000000001", SessionName: "kms-plugin", PrincipalID: "300000000000000001:kms-plugin"},
	}
	return admin, plugin
}

// Start starts the KMS API (creating the key on first start) and the plugin instances, and returns
// when every instance serves on its socket.
func Start(ctx context.Context, opts Options) (*Stack, error) {
	s := &Stack{opts: opts, dir: opts.Dir, Region: kmsapi.DefaultRegion, AccountID: kmsapi.DefaultAccountID}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "rekey-kms-")
		if err != nil {
			return nil, fmt.Errorf("kms stack: %w", err)
		}
		s.dir, s.removeDir = d, true
	}
	if s.opts.StatusInterval <= 0 {
		s.opts.StatusInterval = time.Second
	}
	s.opts.Plugins = slices.Clone(s.opts.Plugins)
	if len(s.opts.Plugins) == 0 {
		s.opts.Plugins = []PluginOptions{{}}
	}
	for i, po := range s.opts.Plugins {
		if po.StatusInterval < 0 || po.AdoptAfter < 0 {
			return nil, fmt.Errorf("kms stack: plugin instance %d: intervals must not be negative", i)
		}
		if po.StatusInterval == 0 {
			s.opts.Plugins[i].StatusInterval = s.opts.StatusInterval
		}
	}
	s.state = filepath.Join(s.dir, "kms-state.json")
	s.Socket = s.socketPath(0)
	admin, plugin := credentials()
	s.Admin = kms.Credentials{AccessKeyID: admin.AccessKeyID, AccessKeySecret: admin.AccessKeySecret}
	s.PluginCreds = kms.Credentials{AccessKeyID: plugin.AccessKeyID, AccessKeySecret: plugin.AccessKeySecret, SecurityToken: plugin.SecurityToken}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("kms stack: listen: %w", err)
	}
	s.Endpoint = ln.Addr().String()
	if err := s.serveKMS(ln); err != nil {
		return nil, err
	}
	id, _, err := s.server.EnsureKey(keyAlias)
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("kms stack: %w", err)
	}
	s.KeyID = id
	for i := range s.opts.Plugins {
		p, err := s.startPlugin(ctx, i)
		if err != nil {
			s.Stop()
			return nil, err
		}
		s.plugins = append(s.plugins, p)
	}
	return s, nil
}

func (s *Stack) serveKMS(ln net.Listener) error {
	admin, plugin := credentials()
	creds := append([]kmsapi.Credential{admin, plugin}, s.opts.Credentials...)
	srv, err := kmsapi.NewServer(kmsapi.Options{Credentials: creds, StatePath: s.state, EventSource: "kms-vpc." + s.Region + ".aliyuncs.com",
		OnRecord: s.opts.OnRecord})
	if err != nil {
		ln.Close()
		return fmt.Errorf("kms stack: %w", err)
	}
	s.mu.Lock()
	s.server = srv
	s.httpSrv = &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	s.serveDone = make(chan struct{})
	hs, done := s.httpSrv, s.serveDone
	s.mu.Unlock()
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
	return nil
}

// Server is the running KMS API stand-in (counters, ActionTrail records).
func (s *Stack) Server() *kmsapi.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.server
}

// Client is a rekey KMS client of the stand-in with the given credentials.
func (s *Stack) Client(c kms.Credentials) (*kms.SDKClient, error) {
	cl, err := kms.NewSDKClient(kms.Config{Region: s.Region, Endpoint: s.Endpoint, Scheme: kms.SchemeHTTP, Credentials: c})
	if err != nil {
		return nil, fmt.Errorf("kms stack: client: %w", err)
	}
	return cl, nil
}

// SDK is an unmodified Alibaba Cloud SDK KMS client with the admin credential, for the operations
// rekey itself never performs (CreateKeyVersion, DisableKey, EnableKey, ...).
func (s *Stack) SDK() (*sdkkms.Client, error) {
	c, err := sdkkms.NewClientWithAccessKey(s.Region, s.Admin.AccessKeyID, s.Admin.AccessKeySecret)
	if err != nil {
		return nil, fmt.Errorf("kms stack: sdk client: %w", err)
	}
	c.Domain = s.Endpoint
	c.GetConfig().WithScheme("HTTP")
	return c, nil
}

// Rotate creates a new key version through the SDK and returns its ID.
func (s *Stack) Rotate() (string, error) {
	c, err := s.SDK()
	if err != nil {
		return "", err
	}
	req := sdkkms.CreateCreateKeyVersionRequest()
	req.Scheme = "HTTP"
	req.KeyId = s.KeyID
	resp, err := c.CreateKeyVersion(req)
	if err != nil {
		return "", fmt.Errorf("kms stack: create key version: %w", err)
	}
	return resp.KeyVersion.KeyVersionId, nil
}

// SetEnabled enables or disables the key through the SDK.
func (s *Stack) SetEnabled(enabled bool) error {
	c, err := s.SDK()
	if err != nil {
		return err
	}
	if enabled {
		req := sdkkms.CreateEnableKeyRequest()
		req.Scheme, req.KeyId = "HTTP", s.KeyID
		_, err = c.EnableKey(req)
	} else {
		req := sdkkms.CreateDisableKeyRequest()
		req.Scheme, req.KeyId = "HTTP", s.KeyID
		_, err = c.DisableKey(req)
	}
	if err != nil {
		return fmt.Errorf("kms stack: set key enabled=%v: %w", enabled, err)
	}
	return nil
}

// PrimaryVersion asks KMS for the key's primary version.
func (s *Stack) PrimaryVersion(ctx context.Context) (string, error) {
	c, err := s.Client(s.Admin)
	if err != nil {
		return "", err
	}
	m, err := c.DescribeKey(ctx, s.KeyID)
	if err != nil {
		return "", fmt.Errorf("kms stack: %w", err)
	}
	return m.PrimaryKeyVersion, nil
}

// RestartKMS stops the KMS API and starts a new one on the same port from the state file, as a
// process restart would.
func (s *Stack) RestartKMS(ctx context.Context) error {
	s.mu.Lock()
	hs, done := s.httpSrv, s.serveDone
	s.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	<-done
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", s.Endpoint); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("kms stack: listen again on %s: %w", s.Endpoint, err)
	}
	return s.serveKMS(ln)
}

// Stop stops every plugin instance and the KMS API, and removes the directory it created.
func (s *Stack) Stop() {
	for _, p := range s.plugins {
		p.stop()
	}
	s.mu.Lock()
	hs, done := s.httpSrv, s.serveDone
	s.httpSrv = nil
	s.mu.Unlock()
	if hs != nil {
		_ = hs.Close()
		<-done
	}
	if s.removeDir {
		_ = os.RemoveAll(s.dir)
	}
}

// WaitAPIServer waits until the API server writes new Secrets under key version: until a Secret
// it writes is stored with the key_id a plugin instance writes for version (KeyIDFor; any instance,
// as c may use any of Providers()). The API server polls its KMS plugin's Status every minute when
// healthy; its /readyz/kms-providers check runs the same probe (cached 20 s), so polling it makes
// the API server notice a rotation sooner, as an operator's readiness checks would.
func (s *Stack) WaitAPIServer(ctx context.Context, c *controlplane.Cluster, version string) error {
	rc, err := rest.RESTClientFor(restConfigForRaw(c))
	if err != nil {
		return fmt.Errorf("kms stack: rest client: %w", err)
	}
	want := make(map[string]bool, len(s.plugins))
	for i := range s.plugins {
		want[s.KeyIDFor(i, version)] = true
	}
	err = c.WaitEncryptionReload(ctx, func(raw []byte) bool {
		if v, err := storedvalue.Classify(raw); err == nil && v.Provider == storedvalue.KMSv2 && want[v.KeyID] {
			return true
		}
		_, _ = rc.Get().AbsPath("/readyz/kms-providers").DoRaw(ctx)
		return false
	})
	if err != nil {
		return fmt.Errorf("kms stack: wait for the API server to use key version %s: %w", version, err)
	}
	return nil
}

func restConfigForRaw(c *controlplane.Cluster) *rest.Config {
	cfg := c.RestConfig(controlplane.AdminUser)
	cfg.GroupVersion = &schema.GroupVersion{}
	cfg.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	return cfg
}
