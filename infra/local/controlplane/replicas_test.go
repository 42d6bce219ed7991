package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// identityLeaseSelector selects the kube-apiserver identity Leases in kube-system.
const identityLeaseSelector = "apiserver.kubernetes.io/identity=kube-apiserver"

func TestAPIServerID(t *testing.T) {
	// Computed with upstream's own code (cryptobyte, as in k8s.io/apiserver v0.37.2 NewConfig).
	for _, tc := range []struct{ hostname, id, hash string }{
		{"rekey-apiserver-0", "apiserver-lj2badwgmvd4vclyalpri4etca", "sha256:0000e98d1a893a33d37b28594fa1d9755489601bc3d4809ab94bb91a0f7ccae6"},
		{"rekey-apiserver-1", "apiserver-ptcuzyro5bsaizbvvnmhsrigwu", "sha256:69a542ab9e1984378cc81a1c4bd2f0e28fed850ce9398769b55db403ef23f29e"},
		{"node-a", "apiserver-kcaaxytsc3gyd2kyybqqvf4bl4", "sha256:8b72977e25b3890e94d741f3bbbed0715a914b238d51e7653459fb99890ed093"},
	} {
		if got := APIServerID(tc.hostname); got != tc.id {
			t.Errorf("APIServerID(%q) = %q, want %q", tc.hostname, got, tc.id)
		}
		if got := APIServerIDHash(tc.id); got != tc.hash {
			t.Errorf("APIServerIDHash(%q) = %q, want %q", tc.id, got, tc.hash)
		}
	}
	if APIServerIDHash("") != "" {
		t.Error("hash of an empty ID must be empty, as upstream's getHash")
	}
	if ReplicaHostname(3) != "rekey-apiserver-3" {
		t.Errorf("ReplicaHostname(3) = %q", ReplicaHostname(3))
	}
}

func TestPrepareRejectsNegativeReplicas(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{EtcdBinary, KubeAPIServerBinary} {
		if err := os.WriteFile(dir+"/"+name, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := prepare(Options{BinDir: dir, Replicas: -1}); err == nil {
		t.Error("Replicas -1: no error")
	}
	bad := func(i int) *Encryption {
		if i == 1 {
			return &Encryption{} // no providers
		}
		return &Encryption{Providers: []Provider{Identity()}}
	}
	if _, err := prepare(Options{BinDir: dir, Replicas: 2, ReplicaEncryption: bad}); err == nil || !strings.Contains(err.Error(), "replica 1") {
		t.Errorf("a bad config for replica 1: %v", err)
	}
}

// TestReplicas starts an ACK-shaped control plane, two kube-apiservers on one etcd behind the
// load balancer, and checks identities, per-connection balancing, per-replica encryption
// configs, and taking a replica out and back.
func TestReplicas(t *testing.T) {
	t.Parallel()
	k0, k1, shared := NewKey("r0"), NewKey("r1"), NewKey("shared")
	begin := time.Now()
	c := StartT(t, Options{
		Replicas: 2,
		ReplicaEncryption: func(i int) *Encryption {
			return &Encryption{Providers: []Provider{AESCBC([]Key{k0, k1}[i]), AESCBC(k0, k1), Identity()}}
		},
	})
	t.Logf("MEASURE start-up of 2 replicas: %v", time.Since(begin).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	reps := c.Replicas()
	if len(reps) != 2 {
		t.Fatalf("Replicas() has %d elements, want 2", len(reps))
	}
	l := c.LB()
	if l == nil {
		t.Fatal("LB() is nil with 2 replicas")
	}
	if c.Server != "https://"+l.Addr() {
		t.Errorf("Server %s is not the load balancer %s", c.Server, l.Addr())
	}
	for i, r := range reps {
		if r.Index != i || r.Hostname != ReplicaHostname(i) || r.APIServerID != APIServerID(r.Hostname) ||
			r.APIServerIDHash != APIServerIDHash(r.APIServerID) || r.PID == 0 || r.Down || r.Server == c.Server ||
			r.EncryptionConfigFile == "" || r.EncryptionConfigFile == reps[1-i].EncryptionConfigFile {
			t.Errorf("replica %d: %+v", i, r)
		}
		// Ready on its own port.
		if code, body, err := c.get(ctx, r.Server, "/readyz"); err != nil || code != http.StatusOK {
			t.Errorf("replica %d GET /readyz: %d %q %v", i, code, body, err)
		}
		// Its own /metrics carry its own identity hash.
		if got, err := metricsIDHashes(ctx, c, r.Server); err != nil || !slices.Equal(got, []string{r.APIServerIDHash}) {
			t.Errorf("replica %d /metrics apiserver_id_hash = %v (%v), want [%s]", i, got, err, r.APIServerIDHash)
		}
	}
	if reps[0].APIServerID == reps[1].APIServerID {
		t.Fatalf("both replicas have identity %s", reps[0].APIServerID)
	}
	if c.EncryptionConfigFile != reps[0].EncryptionConfigFile {
		t.Errorf("EncryptionConfigFile %s, want replica 0's %s", c.EncryptionConfigFile, reps[0].EncryptionConfigFile)
	}

	// Fresh connections through Server alternate between the replicas, each pinned to the
	// replica the load balancer counted it for.
	served := throughLB(ctx, t, c, 6)
	if want := []int{0, 1, 0, 1, 0, 1}; !slices.Equal(served, want) && !slices.Equal(served, []int{1, 0, 1, 0, 1, 0}) {
		t.Errorf("6 fresh connections served by replicas %v, want alternating", served)
	}

	// The identity Leases in kube-system are exactly the replicas'.
	admin := kubernetes.NewForConfigOrDie(c.RestConfig(AdminUser))
	wantIDs := []string{reps[0].APIServerID, reps[1].APIServerID}
	slices.Sort(wantIDs)
	leases := waitIdentityLeases(ctx, t, admin, wantIDs)
	if got := leaseNames(leases); !slices.Equal(got, wantIDs) {
		t.Errorf("identity leases %v, want %v", got, wantIDs)
	}
	for _, lease := range leases {
		holder := ""
		if lease.Spec.HolderIdentity != nil {
			holder = *lease.Spec.HolderIdentity
		}
		t.Logf("identity lease %s: holder %s, hostname label %q", lease.Name, holder, lease.Labels["kubernetes.io/hostname"])
	}

	// Each replica writes with its own config; through the load balancer either may answer.
	for i, key := range []string{"r0", "r1"} {
		if err := c.WaitReplicaEncryptionReload(ctx, i, hasPrefix("k8s:enc:aescbc:v1:"+key+":")); err != nil {
			t.Errorf("replica %d writes with key %s: %v", i, key, err)
		}
	}
	// SetEncryption rewrites both files; WaitEncryptionReload waits for both replicas.
	if err := c.SetEncryption(Encryption{Providers: []Provider{AESCBC(shared, k0, k1), Identity()}}); err != nil {
		t.Fatal(err)
	}
	reloadBegin := time.Now()
	if err := c.WaitEncryptionReload(ctx, hasPrefix("k8s:enc:aescbc:v1:shared:")); err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURE automatic reload on both replicas: %v", time.Since(reloadBegin).Round(time.Millisecond))
	for i := range 2 {
		if err := c.WaitReplicaEncryptionReload(ctx, i, hasPrefix("k8s:enc:aescbc:v1:shared:")); err != nil {
			t.Errorf("replica %d after SetEncryption: %v", i, err)
		}
	}

	// StopReplica takes replica 1 out of rotation: every new connection goes to replica 0.
	if err := c.StopReplica(1); err != nil {
		t.Fatal(err)
	}
	if r := c.Replicas()[1]; !r.Down || r.PID != 0 {
		t.Errorf("stopped replica: %+v", r)
	}
	before1 := l.Connections(1)
	if served := throughLB(ctx, t, c, 4); !slices.Equal(served, []int{0, 0, 0, 0}) {
		t.Errorf("with replica 1 stopped, connections served by %v", served)
	}
	if l.Connections(1) != before1 || l.DialFailures(1) != 0 {
		t.Errorf("stopped replica 1 got %d connections, %d dials", l.Connections(1)-before1, l.DialFailures(1))
	}
	if _, err := admin.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Errorf("API through the load balancer with one replica stopped: %v", err)
	}
	if err := c.StopReplica(1); err == nil {
		t.Error("StopReplica of a stopped replica: no error")
	}
	if err := c.StartReplica(ctx, 0); err == nil {
		t.Error("StartReplica of a running replica: no error")
	}
	if err := c.StopReplica(2); err == nil {
		t.Error("StopReplica(2) of 2 replicas: no error")
	}
	startBegin := time.Now()
	if err := c.StartReplica(ctx, 1); err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURE StartReplica: %v", time.Since(startBegin).Round(time.Millisecond))
	if r := c.Replicas()[1]; r.Down || r.PID == 0 {
		t.Errorf("started replica: %+v", r)
	}
	if served := throughLB(ctx, t, c, 4); slices.Index(served, 0) < 0 || slices.Index(served, 1) < 0 {
		t.Errorf("after StartReplica, connections served by %v, want both", served)
	}

	// A killed replica is not taken out of rotation, but the balancer falls through to the other.
	if err := c.KillReplica(0); err != nil {
		t.Fatal(err)
	}
	if served := throughLB(ctx, t, c, 3); !slices.Equal(served, []int{1, 1, 1}) {
		t.Errorf("with replica 0 killed, connections served by %v", served)
	}
	if l.DialFailures(0) == 0 {
		t.Error("no refused dial to the killed replica")
	}
	// StartAPIServer starts the replicas that are down (here replica 0) and fails when none is.
	if err := c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.StartAPIServer(ctx); err == nil {
		t.Error("StartAPIServer with every replica running: no error")
	}
	logKubernetesEndpoints(ctx, t, admin)

	// A Secret written through the load balancer reads back from either replica.
	if _, err := admin.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "via-lb"}, Data: map[string][]byte{"k": []byte("v")},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		cs := kubernetes.NewForConfigOrDie(c.ReplicaRestConfig(i, AdminUser))
		if got, err := cs.CoreV1().Secrets("default").Get(ctx, "via-lb", metav1.GetOptions{}); err != nil || string(got.Data["k"]) != "v" {
			t.Errorf("replica %d reads the secret: %v", i, err)
		}
	}

	// RestartAPIServer restarts both replicas one after the other; clients of Server on fresh
	// connections meanwhile find a ready replica (logged, not asserted: a request racing the
	// SIGTERM of its replica may still fail).
	oldPIDs := []int{c.Replicas()[0].PID, c.Replicas()[1].PID}
	stopLoad := make(chan struct{})
	loadDone := make(chan [2]int)
	go func() {
		var ok, failed int
		for {
			select {
			case <-stopLoad:
				loadDone <- [2]int{ok, failed}
				return
			default:
			}
			if code, _, err := c.get(ctx, c.Server, "/api/v1/namespaces/default"); err == nil && code == http.StatusOK {
				ok++
			} else {
				failed++
			}
			c.httpClient.CloseIdleConnections()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	restartBegin := time.Now()
	err := c.RestartAPIServer(ctx)
	close(stopLoad)
	load := <-loadDone
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURE rolling RestartAPIServer of 2 replicas: %v; requests through the load balancer meanwhile: %d ok, %d failed",
		time.Since(restartBegin).Round(time.Millisecond), load[0], load[1])
	for i, r := range c.Replicas() {
		if r.PID == 0 || r.PID == oldPIDs[i] || r.Down {
			t.Errorf("replica %d after RestartAPIServer: %+v (old PID %d)", i, r, oldPIDs[i])
		}
	}
	if served := throughLB(ctx, t, c, 2); slices.Index(served, 0) < 0 || slices.Index(served, 1) < 0 {
		t.Errorf("after RestartAPIServer, connections served by %v, want both", served)
	}

	func() {
		defer func() {
			if recover() == nil {
				t.Error("APIServerPID with 2 replicas did not panic")
			}
		}()
		c.APIServerPID()
	}()
}

// throughLB sends n admin GET /metrics requests through c.Server, each on a new connection, and
// returns which replica served each one. It checks that the replica the load balancer counted
// the connection for is the one whose identity hash the answer carries.
func throughLB(ctx context.Context, t *testing.T, c *Cluster, n int) []int {
	t.Helper()
	reps := c.Replicas()
	l := c.LB()
	var served []int
	for k := range n {
		before := make([]int64, len(reps))
		for i := range reps {
			before[i] = l.Connections(i)
		}
		hashes, err := metricsIDHashes(ctx, c, c.Server)
		if err != nil {
			t.Fatalf("connection %d through the load balancer: %v", k, err)
		}
		counted := -1
		for i := range reps {
			if d := l.Connections(i) - before[i]; d == 1 && counted < 0 {
				counted = i
			} else if d != 0 {
				t.Errorf("connection %d: load balancer counted %d new connections for replica %d", k, d, i)
			}
		}
		if len(hashes) != 1 {
			t.Fatalf("connection %d: /metrics carry apiserver_id_hash %v, want exactly one", k, hashes)
		}
		by := slices.IndexFunc(reps, func(r Replica) bool { return r.APIServerIDHash == hashes[0] })
		if by < 0 {
			t.Fatalf("connection %d: answered by unknown identity hash %s", k, hashes[0])
		}
		if by != counted {
			t.Errorf("connection %d: counted for replica %d, answered by replica %d", k, counted, by)
		}
		served = append(served, by)
	}
	return served
}

var idHashLabel = regexp.MustCompile(`apiserver_id_hash="([^"]*)"`)

// metricsIDHashes sends an admin GET /metrics to base on a new connection (no keep-alive) and
// returns the distinct non-empty apiserver_id_hash label values in the answer, sorted.
func metricsIDHashes(ctx context.Context, c *Cluster, base string) ([]string, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAData)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s/metrics: %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: HTTP %d, %v", base, resp.StatusCode, err)
	}
	var hashes []string
	for _, m := range idHashLabel.FindAllStringSubmatch(string(body), -1) {
		if m[1] != "" && !slices.Contains(hashes, m[1]) {
			hashes = append(hashes, m[1])
		}
	}
	slices.Sort(hashes)
	return hashes, nil
}

// waitIdentityLeases lists the kube-apiserver identity Leases in kube-system until their names
// are want (sorted) or 30 s have passed, and returns the last list: each API server creates its
// Lease shortly after it starts.
func waitIdentityLeases(ctx context.Context, t *testing.T, cs kubernetes.Interface, want []string) []coordinationv1.Lease {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := cs.CoordinationV1().Leases(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: identityLeaseSelector})
		if err != nil {
			t.Fatalf("list identity leases: %v", err)
		}
		if slices.Equal(leaseNames(list.Items), want) || time.Now().After(deadline) {
			return list.Items
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func leaseNames(leases []coordinationv1.Lease) []string {
	var names []string
	for _, l := range leases {
		names = append(names, l.Name)
	}
	slices.Sort(names)
	return names
}

// logKubernetesEndpoints logs what the endpoint reconciler of the replicas made of the
// "kubernetes" Service: facts for the report, not assertions.
func logKubernetesEndpoints(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	slices, err := cs.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Logf("EndpointSlice default/kubernetes: %v", err)
		return
	}
	var b strings.Builder
	for _, e := range slices.Endpoints {
		fmt.Fprintf(&b, " %v", e.Addresses)
	}
	for _, p := range slices.Ports {
		if p.Port != nil {
			fmt.Fprintf(&b, " port %d", *p.Port)
		}
	}
	t.Logf("EndpointSlice default/kubernetes:%s", b.String())
}

func TestSetEncryptionMixedReplicas(t *testing.T) {
	dir := t.TempDir()
	reps, err := newReplicas(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	reps[0].encrypted = true // replica 1 was started without a config
	c := &Cluster{replicas: reps}
	e := Encryption{Providers: []Provider{Identity()}}
	if err := c.SetEncryption(e); err == nil || !strings.Contains(err.Error(), "only 1 of 2") {
		t.Errorf("SetEncryption with replica 1 unencrypted: %v", err)
	}
	if _, err := os.Stat(reps[0].encryptionFile); err == nil {
		t.Error("SetEncryption wrote replica 0's file although it failed")
	}
	if err := c.SetReplicaEncryption(1, e); err == nil {
		t.Error("SetReplicaEncryption of an unencrypted replica: no error")
	}
	if err := c.SetReplicaEncryption(2, e); err == nil {
		t.Error("SetReplicaEncryption of replica 2 of 2: no error")
	}
	if err := c.SetReplicaEncryption(0, e); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(reps[0].encryptionFile); err != nil || !strings.Contains(string(data), "identity: {}") {
		t.Errorf("replica 0's file: %q, %v", data, err)
	}
	if reps[0].encryptionFile == reps[1].encryptionFile || reps[0].name != "kube-apiserver-0" || reps[1].hostname != "rekey-apiserver-1" {
		t.Errorf("replicas: %+v %+v", reps[0], reps[1])
	}
}
