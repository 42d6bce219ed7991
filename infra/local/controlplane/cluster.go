package controlplane

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rekey-dev/rekey/infra/local/lb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// AdminUser is the user every cluster has, in group system:masters; its token is
// Cluster.AdminToken.
const AdminUser = "admin"

// Timeouts of the start-up steps.
const (
	etcdReadyTimeout      = 30 * time.Second
	apiserverReadyTimeout = 60 * time.Second
	pollInterval          = 100 * time.Millisecond
)

// errPortInUse marks a start-up failure caused by a port taken between freePorts and the bind.
var errPortInUse = errors.New("port already in use")

// User is a token-authenticated user of the API server. The harness grants it no RBAC
// permissions; groups such as "system:masters" grant what they grant.
type User struct {
	Name   string
	Token  string // empty: Start generates a random one
	Groups []string
}

// Options configures Start. The zero value starts a cluster with one kube-apiserver and without
// encryption at rest in a new temporary directory.
type Options struct {
	// BinDir holds EtcdBinary and KubeAPIServerBinary. Empty: $REKEY_BIN_DIR, else
	// ${REKEY_CACHE:-$HOME/.cache/rekey}/bin.
	BinDir string
	// Encryption is written as the API server's encryption config (with automatic reload).
	// nil: the API server runs without --encryption-provider-config and SetEncryption fails.
	// With several replicas every replica gets its own copy, unless ReplicaEncryption is set.
	Encryption *Encryption
	// Replicas is how many kube-apiservers run on the one etcd. 0 or 1: one, and Cluster.Server
	// is its own URL. More: an "ACK-shaped" control plane; each replica has its own secure port,
	// cert dir, encryption config file, log ("kube-apiserver-I: " or kube-apiserver-I.log) and
	// host name (ReplicaHostname(I), so a distinct APIServerID), and Cluster.Server is a TCP load
	// balancer (package lb) that pins each new connection to the next replica in rotation. See
	// Cluster.Replicas, Cluster.LB, StopReplica and StartReplica.
	Replicas int
	// ReplicaEncryption, when set, returns replica i's encryption config instead of Encryption
	// (nil: replica i runs without --encryption-provider-config), so replicas can disagree.
	ReplicaEncryption func(i int) *Encryption
	// Users are token users in addition to AdminUser. Names must be unique and not "admin".
	Users []User
	// ExtraAPIServerFlags are appended to kube-apiserver's command line ("--flag=value").
	ExtraAPIServerFlags []string
	// Log receives etcd and kube-apiserver output, each line prefixed with "etcd: " or
	// "kube-apiserver: " ("kube-apiserver-I: " with several replicas). nil: etcd.log and
	// kube-apiserver.log (kube-apiserver-I.log) in Dir.
	Log io.Writer
	// Dir is the working directory (certificates, tokens, encryption config, etcd data). Empty:
	// a new temporary directory that Stop removes. A given Dir is created if needed and kept;
	// etcd data already in it is reused.
	Dir string

	// EncryptionReloadInterval is how often the API server polls the encryption config file
	// (upstream: one minute; the knob upstream's integration tests use). Default 1s.
	EncryptionReloadInterval time.Duration

	// pickPorts replaces freePorts in tests that provoke a bind failure.
	pickPorts func(n int) ([]int, error)
}

// Cluster is a running etcd and kube-apiserver (or several, see Options.Replicas) on loopback.
// Its methods are safe for concurrent use; its fields must not be modified.
type Cluster struct {
	// Dir is the working directory.
	Dir string
	// Server is the API server URL, https://127.0.0.1:PORT: the API server itself, or with
	// several replicas the load balancer in front of them.
	Server string
	// CAData is the PEM of the CA that signed the API server's serving certificate.
	CAData []byte
	// AdminToken is the bearer token of AdminUser.
	AdminToken string
	// EtcdEndpoint is etcd's client URL, http://127.0.0.1:PORT.
	EtcdEndpoint string
	// Etcd is a client of EtcdEndpoint, for reading raw stored values. Stop closes it.
	Etcd *clientv3.Client
	// EncryptionConfigFile is the path of the encryption config, "" without one. With several
	// replicas it is replica 0's file (each replica has its own: Replica.EncryptionConfigFile).
	EncryptionConfigFile string

	tokens       map[string]string // user name -> token
	removeDir    bool
	apiserverBin string
	httpClient   *http.Client // verifies with CAData; used for readiness checks
	logs         []io.Closer
	etcdLog      *procLog
	replicas     []*replica // one per kube-apiserver; the slice and the facts in it are fixed
	lb           *lb.LB     // nil with one replica

	mu      sync.Mutex // guards the fields below, every replica's proc and the encryption config files
	etcd    *process
	stopped bool

	stopOnce sync.Once
	stopErr  error
}

// startConfig is what Start validated and generated once, shared by both attempts.
type startConfig struct {
	opts         Options
	replicas     int
	etcdBin      string
	apiserverBin string
	tokens       map[string]string
	tokensCSV    []byte
	encryption   [][]byte // rendered config per replica; nil without one
}

// Start writes the cluster's files, starts etcd and then kube-apiserver (every replica) and
// returns once each API server's /readyz answers 200 to the admin and namespace "default"
// exists (with several replicas, then the load balancer too). ctx bounds the start-up only; the
// processes run until Stop. A port taken by someone else between choosing it and binding it
// makes Start try once more with new ports.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	cfg, err := prepare(opts)
	if err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	c, err := startOnce(ctx, cfg)
	if errors.Is(err, errPortInUse) && ctx.Err() == nil {
		c, err = startOnce(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	return c, nil
}

// prepare validates opts, finds the binaries and renders the files that do not depend on ports.
func prepare(opts Options) (*startConfig, error) {
	dir, err := binDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	cfg := &startConfig{opts: opts, replicas: max(opts.Replicas, 1), tokens: map[string]string{}}
	if opts.Replicas < 0 {
		return nil, fmt.Errorf("replicas: %d is negative", opts.Replicas)
	}
	if cfg.etcdBin, err = findBinary(dir, EtcdBinary); err != nil {
		return nil, err
	}
	if cfg.apiserverBin, err = findBinary(dir, KubeAPIServerBinary); err != nil {
		return nil, err
	}

	var csv bytes.Buffer
	adminToken := randomToken()
	cfg.tokens[AdminUser] = adminToken
	fmt.Fprintf(&csv, "%s,%s,%s,\"system:masters\"\n", adminToken, AdminUser, AdminUser)
	for _, u := range opts.Users {
		if u.Name == AdminUser {
			return nil, fmt.Errorf("user %q: the name is reserved for the built-in admin", u.Name)
		}
		if _, dup := cfg.tokens[u.Name]; dup {
			return nil, fmt.Errorf("user %q: duplicate name", u.Name)
		}
		token := u.Token
		if token == "" {
			token = randomToken()
		}
		for what, v := range map[string]string{"name": u.Name, "token": token} {
			if v == "" || strings.ContainsAny(v, ",\"\r\n") {
				return nil, fmt.Errorf("user %q: %s must be non-empty without commas, quotes or newlines", u.Name, what)
			}
		}
		for _, g := range u.Groups {
			if g == "" || strings.ContainsAny(g, ",\"\r\n") {
				return nil, fmt.Errorf("user %q: group %q must be non-empty without commas, quotes or newlines", u.Name, g)
			}
		}
		for _, known := range cfg.tokens {
			if known == token {
				return nil, fmt.Errorf("user %q: token already used by another user", u.Name)
			}
		}
		cfg.tokens[u.Name] = token
		fmt.Fprintf(&csv, "%s,%s,%s", token, u.Name, u.Name)
		if len(u.Groups) > 0 {
			fmt.Fprintf(&csv, ",\"%s\"", strings.Join(u.Groups, ","))
		}
		csv.WriteByte('\n')
	}
	cfg.tokensCSV = csv.Bytes()

	cfg.encryption = make([][]byte, cfg.replicas)
	for i := range cfg.replicas {
		e := opts.Encryption
		if opts.ReplicaEncryption != nil {
			e = opts.ReplicaEncryption(i)
		}
		if e == nil {
			continue
		}
		if cfg.encryption[i], err = encryptionConfigYAML(*e); err != nil {
			if cfg.replicas > 1 {
				return nil, fmt.Errorf("replica %d: %w", i, err)
			}
			return nil, err
		}
	}
	return cfg, nil
}

// startOnce makes one attempt at starting the cluster; on failure it stops what it started.
func startOnce(ctx context.Context, cfg *startConfig) (_ *Cluster, err error) {
	c := &Cluster{tokens: cfg.tokens, AdminToken: cfg.tokens[AdminUser], apiserverBin: cfg.apiserverBin}
	newEtcdData := "" // etcd data this attempt creates in a kept Dir
	defer func() {
		if err == nil {
			return
		}
		if stopErr := c.Stop(); stopErr != nil {
			err = fmt.Errorf("%w (and clean-up failed: %v)", err, stopErr)
		}
		if newEtcdData != "" {
			// A failed attempt must not leave a half-made member behind for the retry.
			_ = os.RemoveAll(newEtcdData)
		}
	}()

	if cfg.opts.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "rekey-controlplane-"); err != nil {
			return nil, fmt.Errorf("create working directory: %w", err)
		}
		c.removeDir = true
	} else {
		c.Dir = cfg.opts.Dir
		if err := os.MkdirAll(c.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("create working directory: %w", err)
		}
	}

	pki, caPEM, err := writePKI(c.Dir)
	if err != nil {
		return nil, err
	}
	c.CAData = caPEM
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c.httpClient = &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	tokensFile := filepath.Join(c.Dir, "tokens.csv")
	if err := os.WriteFile(tokensFile, cfg.tokensCSV, 0o600); err != nil {
		return nil, fmt.Errorf("write tokens.csv: %w", err)
	}
	if c.replicas, err = newReplicas(c.Dir, cfg.replicas); err != nil {
		return nil, err
	}
	for i, r := range c.replicas {
		if cfg.encryption[i] == nil {
			continue
		}
		if err := writeFileAtomic(r.encryptionFile, cfg.encryption[i]); err != nil {
			return nil, err
		}
		r.encrypted = true
	}
	if c.replicas[0].encrypted {
		c.EncryptionConfigFile = c.replicas[0].encryptionFile
	}
	if err := c.openLogs(cfg.opts.Log); err != nil {
		return nil, err
	}

	pick := cfg.opts.pickPorts
	if pick == nil {
		pick = freePorts
	}
	ports, err := pick(2 + len(c.replicas))
	if err != nil {
		return nil, err
	}
	etcdClientURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	etcdPeerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	c.EtcdEndpoint = etcdClientURL
	for i, r := range c.replicas {
		r.port = ports[2+i]
		r.server = "https://127.0.0.1:" + strconv.Itoa(r.port)
	}
	c.Server = c.replicas[0].server

	etcdData := filepath.Join(c.Dir, "etcd")
	if _, statErr := os.Stat(etcdData); errors.Is(statErr, os.ErrNotExist) && !c.removeDir {
		newEtcdData = etcdData
	}
	etcdArgs := []string{
		"--name=default",
		"--data-dir=" + etcdData,
		"--listen-client-urls=" + etcdClientURL,
		"--advertise-client-urls=" + etcdClientURL,
		"--listen-peer-urls=" + etcdPeerURL,
		"--initial-advertise-peer-urls=" + etcdPeerURL,
		"--initial-cluster=default=" + etcdPeerURL,
		"--unsafe-no-fsync",
	}
	if c.etcd, err = startProcess("etcd", cfg.etcdBin, etcdArgs, nil, c.Dir, c.etcdLog); err != nil {
		return nil, err
	}
	if c.Etcd, err = clientv3.New(clientv3.Config{
		Endpoints:   []string{etcdClientURL},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	}); err != nil {
		return nil, fmt.Errorf("create etcd client: %w", err)
	}
	if err := c.waitEtcd(ctx); err != nil {
		return nil, err
	}

	reload := cfg.opts.EncryptionReloadInterval
	if reload <= 0 {
		reload = time.Second
	}
	for _, r := range c.replicas {
		r.args = []string{
			"--etcd-servers=" + etcdClientURL,
			"--secure-port=" + strconv.Itoa(r.port),
			"--bind-address=127.0.0.1",
			"--cert-dir=" + r.certDir,
			"--tls-cert-file=" + pki.servingCrt,
			"--tls-private-key-file=" + pki.servingKey,
			"--token-auth-file=" + tokensFile,
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc",
			"--service-account-key-file=" + pki.saPub,
			"--service-account-signing-key-file=" + pki.saKey,
			"--service-cluster-ip-range=10.0.0.0/24",
			"--disable-admission-plugins=ServiceAccount",
		}
		if r.hasEncryption() {
			r.args = append(r.args,
				"--encryption-provider-config="+r.encryptionFile,
				"--encryption-provider-config-automatic-reload=true",
			)
		}
		r.args = append(r.args, cfg.opts.ExtraAPIServerFlags...)
		r.env = []string{"REKEY_ENCRYPTION_RELOAD_INTERVAL=" + reload.String()}
		if len(c.replicas) > 1 {
			r.env = append(r.env, "REKEY_APISERVER_HOSTNAME="+r.hostname)
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	// All replicas boot at once (they share the bootstrap work through etcd), then each must
	// become ready on its own port.
	for _, r := range c.replicas {
		if err := c.startReplicaProcess(r); err != nil {
			return nil, err
		}
	}
	for _, r := range c.replicas {
		if err := c.waitReplica(ctx, r, readyPaths...); err != nil {
			return nil, err
		}
	}
	if len(c.replicas) > 1 {
		backends := make([]string, len(c.replicas))
		for i, r := range c.replicas {
			backends[i] = "127.0.0.1:" + strconv.Itoa(r.port)
		}
		if c.lb, err = lb.New("127.0.0.1:0", backends); err != nil {
			return nil, err
		}
		c.Server = "https://" + c.lb.Addr()
		if code, body, err := c.get(ctx, c.Server, "/readyz"); err != nil || code != http.StatusOK {
			return nil, fmt.Errorf("kube-apiserver through the load balancer %s: GET /readyz: HTTP %d %q, %v", c.Server, code, body, err)
		}
		c.httpClient.CloseIdleConnections()
	}
	return c, nil
}

// openLogs sets up where process output goes: prefixed lines into w, or one file per process.
func (c *Cluster) openLogs(w io.Writer) error {
	if w != nil {
		mu := &sync.Mutex{}
		c.etcdLog = newProcLog("etcd: ", w, mu)
		for _, r := range c.replicas {
			r.log = newProcLog(r.name+": ", w, mu)
		}
		return nil
	}
	logs := []struct {
		log  **procLog
		file string
	}{{&c.etcdLog, "etcd.log"}}
	for _, r := range c.replicas {
		logs = append(logs, struct {
			log  **procLog
			file string
		}{&r.log, r.name + ".log"})
	}
	for _, l := range logs {
		f, err := openLogFile(filepath.Join(c.Dir, l.file))
		if err != nil {
			return err
		}
		c.logs = append(c.logs, f)
		*l.log = newProcLog("", f, &sync.Mutex{})
	}
	return nil
}

// waitEtcd polls etcd with a read until it answers.
func (c *Cluster) waitEtcd(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, etcdReadyTimeout)
	defer cancel()
	var last error
	for {
		reqCtx, reqCancel := context.WithTimeout(ctx, time.Second)
		_, last = c.Etcd.Get(reqCtx, "/rekey-controlplane-health")
		reqCancel()
		if last == nil {
			return nil
		}
		if err := c.sleepOrFail(ctx, c.etcd); err != nil {
			return fmt.Errorf("wait for etcd at %s: %w (last error: %v)\n%s", c.EtcdEndpoint, err, last, c.etcdLog.tailText(30))
		}
	}
}

// readyPaths are what a started API server must answer 200 to before it counts as ready.
var readyPaths = []string{"/readyz", "/api/v1/namespaces/default"}

// startReplicaProcess starts r's kube-apiserver with its flags and environment. c.mu is held.
func (c *Cluster) startReplicaProcess(r *replica) error {
	p, err := startProcess(r.name, c.apiserverBin, r.args, r.env, c.Dir, r.log)
	if err != nil {
		return err
	}
	r.proc = p
	return nil
}

// waitReplica polls admin GETs of paths, in order, on r's own URL until each answers 200, r's
// process exits or ctx (bounded by apiserverReadyTimeout) ends. c.mu is held.
func (c *Cluster) waitReplica(ctx context.Context, r *replica, paths ...string) error {
	ctx, cancel := context.WithTimeout(ctx, apiserverReadyTimeout)
	defer cancel()
	last := "no answer yet"
	for _, path := range paths {
		for {
			code, body, err := c.get(ctx, r.server, path)
			if err == nil && code == http.StatusOK {
				break
			}
			if err != nil {
				last = err.Error()
			} else {
				last = fmt.Sprintf("HTTP %d: %s", code, strings.TrimSpace(body))
			}
			if err := c.sleepOrFail(ctx, r.proc); err != nil {
				return fmt.Errorf("wait for %s GET %s%s: %w (last answer: %s)\n%s", r.name, r.server, path, err, last, r.log.tailText(30))
			}
		}
	}
	c.httpClient.CloseIdleConnections()
	return nil
}

// startReplica starts r's kube-apiserver and waits until it answers 200 to paths. With a load
// balancer, r is out of rotation while it starts and back in once it answers. c.mu is held.
func (c *Cluster) startReplica(ctx context.Context, r *replica, paths ...string) error {
	c.setDown(r, true)
	if err := c.startReplicaProcess(r); err != nil {
		return err
	}
	if err := c.waitReplica(ctx, r, paths...); err != nil {
		return err
	}
	c.setDown(r, false)
	return nil
}

// setDown takes r out of the load balancer's rotation or puts it back; a no-op with one
// replica. c.mu is held.
func (c *Cluster) setDown(r *replica, down bool) {
	if c.lb != nil {
		_ = c.lb.SetDown(r.index, down) // r.index is a backend of c.lb by construction
	}
}

// get sends an admin GET to base+path and returns the status code and (truncated) body.
func (c *Cluster) get(ctx context.Context, base, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	return resp.StatusCode, string(body), err
}

// sleepOrFail waits one poll interval; it fails when ctx is done or p has exited (with
// errPortInUse when the process could not bind a port).
func (c *Cluster) sleepOrFail(ctx context.Context, p *process) error {
	t := time.NewTimer(pollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-p.done:
		if p.log.contains("address already in use") {
			return fmt.Errorf("%w: %w", errPortInUse, p.exitError())
		}
		return p.exitError()
	case <-t.C:
		return nil
	}
}

// RestartAPIServer stops kube-apiserver and starts it again with the same flags and the current
// encryption config file, keeping etcd and its data. It returns once the new API server is
// ready: a way to apply SetEncryption in seconds rather than waiting for the automatic reload.
// With several replicas it restarts every replica, one after the other (those stopped or killed
// before are started too): each leaves the load balancer's rotation, stops, starts and comes
// back once ready, so clients of Server always find a ready replica to connect to (connections
// pinned to a restarting replica are cut).
func (c *Cluster) RestartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || len(c.replicas) == 0 || c.replicas[0].proc == nil {
		return errors.New("restart kube-apiserver: cluster is stopped")
	}
	for _, r := range c.replicas {
		c.setDown(r, true)
		if err := r.proc.stop(); err != nil {
			return fmt.Errorf("restart %s: %w", r.name, err)
		}
		if err := c.startReplica(ctx, r, readyPaths...); err != nil {
			return fmt.Errorf("restart %s: %w", r.name, err)
		}
	}
	return nil
}

// Stop stops kube-apiserver (every replica, after the load balancer), closes the etcd client,
// stops etcd and removes Dir if Start created it. Each process gets SIGTERM, then SIGKILL after
// 10 s. Stop is idempotent; it reports a process that had exited on its own before Stop as an
// error.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.stopped = true
		var errs []error
		if c.lb != nil {
			errs = append(errs, c.lb.Close())
		}
		var wg sync.WaitGroup
		replicaErrs := make([]error, len(c.replicas))
		for i, r := range c.replicas {
			if r.proc != nil {
				wg.Go(func() { replicaErrs[i] = r.proc.stop() })
			}
		}
		wg.Wait()
		errs = append(errs, replicaErrs...)
		if c.Etcd != nil {
			if err := c.Etcd.Close(); err != nil && !errors.Is(err, context.Canceled) {
				errs = append(errs, fmt.Errorf("close etcd client: %w", err))
			}
		}
		if c.etcd != nil {
			errs = append(errs, c.etcd.stop())
		}
		if c.httpClient != nil {
			c.httpClient.CloseIdleConnections()
		}
		for _, l := range c.logs {
			errs = append(errs, l.Close())
		}
		if c.removeDir {
			if err := os.RemoveAll(c.Dir); err != nil {
				errs = append(errs, fmt.Errorf("remove working directory: %w", err))
			}
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// Users returns the names of the cluster's token users, AdminUser included.
func (c *Cluster) Users() []string {
	return slices.Sorted(maps.Keys(c.tokens))
}

// Token returns the bearer token of user and whether the user exists.
func (c *Cluster) Token(user string) (string, bool) {
	t, ok := c.tokens[user]
	return t, ok
}

// RestConfig returns a client config that authenticates as user (AdminUser or one of
// Options.Users) with its token and verifies the server with CAData. The config keeps
// client-go's default rate limits (QPS 5, burst 10); raise them for load tests. RestConfig
// panics for an unknown user: that is a bug in the test.
func (c *Cluster) RestConfig(user string) *rest.Config {
	token, ok := c.tokens[user]
	if !ok {
		panic(fmt.Sprintf("controlplane: RestConfig: unknown user %q", user))
	}
	return &rest.Config{
		Host:            c.Server,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: bytes.Clone(c.CAData)},
		QPS:             -1, // no client-side throttling against the local server; callers may set their own
	}
}

// WriteKubeconfig writes a kubeconfig file (mode 0600) for user to path, with cluster, user and
// context all named "local" and the CA embedded, usable by kubectl and clientcmd.
func (c *Cluster) WriteKubeconfig(user, path string) error {
	token, ok := c.tokens[user]
	if !ok {
		return fmt.Errorf("write kubeconfig: unknown user %q", user)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: c.Server, CertificateAuthorityData: bytes.Clone(c.CAData)}
	cfg.AuthInfos["local"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "local", Namespace: "default"}
	cfg.CurrentContext = "local"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// randomToken returns 32 random hex characters.
func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (Go 1.24+).
	return hex.EncodeToString(b)
}

// writeFileAtomic writes data to a temporary file (mode 0600) in path's directory and renames
// it over path, so a reader sees the old or the new content, never a mix.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
