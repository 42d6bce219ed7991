package controlplane

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

func TestStartMissingBinary(t *testing.T) {
	dir := t.TempDir()
	_, err := Start(context.Background(), Options{BinDir: dir})
	if err == nil {
		t.Fatal("Start with an empty BinDir: no error")
	}
	for _, want := range []string{filepath.Join(dir, EtcdBinary), "make tools"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}

	// With etcd present, the error names kube-apiserver.
	if err := os.WriteFile(filepath.Join(dir, EtcdBinary), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Start(context.Background(), Options{BinDir: dir})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, KubeAPIServerBinary)) {
		t.Errorf("error %v does not name the missing kube-apiserver binary", err)
	}
}

func TestBinDir(t *testing.T) {
	t.Setenv("REKEY_BIN_DIR", "")
	t.Setenv("REKEY_CACHE", "/cache")
	if got, _ := binDir(""); got != "/cache/bin" {
		t.Errorf("REKEY_CACHE: got %q", got)
	}
	t.Setenv("REKEY_BIN_DIR", "/bins")
	if got, _ := binDir(""); got != "/bins" {
		t.Errorf("REKEY_BIN_DIR: got %q", got)
	}
	if got, _ := binDir("/opt"); got != "/opt" {
		t.Errorf("Options.BinDir: got %q", got)
	}
	t.Setenv("REKEY_BIN_DIR", "")
	t.Setenv("REKEY_CACHE", "")
	t.Setenv("HOME", "/home/x")
	if got, _ := binDir(""); got != "/home/x/.cache/rekey/bin" {
		t.Errorf("default: got %q", got)
	}
}

func TestPrepareRejectsUsers(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{EtcdBinary, KubeAPIServerBinary} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, users := range map[string][]User{
		"admin":       {{Name: AdminUser}},
		"duplicate":   {{Name: "a"}, {Name: "a"}},
		"empty name":  {{Name: ""}},
		"comma name":  {{Name: "a,b"}},
		"quote token": {{Name: "a", Token: `x"y`}},
		"comma group": {{Name: "a", Groups: []string{"g1,g2"}}},
		"same token":  {{Name: "a", Token: "t"}, {Name: "b", Token: "t"}},
	} {
		if _, err := prepare(Options{BinDir: dir, Users: users}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	cfg, err := prepare(Options{BinDir: dir, Users: []User{{Name: "bob", Token: "bobtoken", Groups: []string{"g1", "g2"}}, {Name: "carol"}}})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(cfg.tokensCSV)), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[0], `,admin,admin,"system:masters"`) ||
		lines[1] != `bobtoken,bob,bob,"g1,g2"` || !strings.HasSuffix(lines[2], ",carol,carol") || len(cfg.tokens["carol"]) != 32 {
		t.Errorf("tokens.csv:\n%s", cfg.tokensCSV)
	}
}

func TestProcLog(t *testing.T) {
	var sink strings.Builder
	var mu sync.Mutex
	l := newProcLog("etcd: ", &sink, &mu)
	_, _ = l.Write([]byte("one\ntw"))
	_, _ = l.Write([]byte("o\nthree"))
	if got, want := sink.String(), "etcd: one\netcd: two\n"; got != want {
		t.Errorf("sink = %q, want %q", got, want)
	}
	if got := l.lines(2); len(got) != 2 || got[0] != "two" || got[1] != "three" {
		t.Errorf("lines(2) = %q", got)
	}
	for i := range maxTail + 5 {
		_, _ = l.Write([]byte(strings.Repeat("x", i%3) + "\n"))
	}
	last := strings.Repeat("x", (maxTail+4)%3)
	if got := l.lines(maxTail + 10); len(got) != maxTail || got[maxTail-1] != last {
		t.Errorf("kept %d lines ending %q, want %d ending %q", len(got), got[len(got)-1], maxTail, last)
	}
	if !l.contains("xx") || l.contains("absent") {
		t.Error("contains is wrong")
	}
}

func TestSetEncryptionWithoutConfig(t *testing.T) {
	err := (&Cluster{}).SetEncryption(Encryption{Providers: []Provider{Identity()}})
	if err == nil || !strings.Contains(err.Error(), "without Options.Encryption") {
		t.Errorf("SetEncryption on a cluster without encryption: %v", err)
	}
}

// TestStartRetriesTakenPort makes the API server's port busy on the first attempt: Start must
// clean up that attempt (etcd included) and succeed with new ports.
func TestStartRetriesTakenPort(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	calls := 0
	pick := func(n int) ([]int, error) {
		calls++
		ports, err := freePorts(n)
		if calls == 1 && err == nil {
			ports[2] = busyPort
		}
		return ports, err
	}

	dir := t.TempDir()
	c := StartT(t, Options{Dir: dir, pickPorts: pick})
	if calls != 2 {
		t.Errorf("picked ports %d times, want 2", calls)
	}
	if strings.HasSuffix(c.Server, ":"+strconv.Itoa(busyPort)) {
		t.Errorf("server %s uses the busy port", c.Server)
	}
	if _, err := kubernetes.NewForConfigOrDie(c.RestConfig(AdminUser)).CoreV1().Namespaces().Get(t.Context(), "default", metav1.GetOptions{}); err != nil {
		t.Errorf("get namespace default: %v", err)
	}
	if c.EncryptionConfigFile != "" || len(c.Replicas()) != 1 || c.Replicas()[0].EncryptionConfigFile != "" || c.LB() != nil {
		t.Errorf("a cluster without encryption has encryption config %q, replicas %+v", c.EncryptionConfigFile, c.Replicas())
	}
	if err := c.SetEncryption(Encryption{Providers: []Provider{Identity()}}); err == nil || !strings.Contains(err.Error(), "without Options.Encryption") {
		t.Errorf("SetEncryption without encryption: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tokens.csv")); err != nil {
		t.Errorf("a given Dir must be kept: %v", err)
	}
}
