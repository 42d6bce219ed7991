package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/infra/local/twin"
	"github.com/rekey-dev/rekey/shared/config"
	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/handler"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

var rekeyBin = flag.String("rekey", "", "path of the rekey binary (make bench passes bin/rekey)")

// Environment knobs of make bench.
const (
	envN            = "REKEY_BENCH_N"             // comma-separated Secret counts (default 1000,10000,50000)
	envOut          = "REKEY_BENCH_OUT"           // results directory (default tests/bench/results)
	envAESCBCMax    = "REKEY_BENCH_AESCBC_MAX_N"  // largest N with the aescbc column (default 50000; 0: none)
	envKubectlMax   = "REKEY_BENCH_KUBECTL_MAX_N" // largest N with the kubectl pipelines (default 10000)
	envFunctionsMax = "REKEY_BENCH_FUNCTIONS_MAX_N"
	envProfileN     = "REKEY_BENCH_PROFILE_N" // N at which rekey --max-speed writes a CPU profile (default the largest)
	envIdle         = "REKEY_BENCH_IDLE"      // how long the idle foreground is sampled (default 15s)
	envRounds       = "REKEY_BENCH_ROUNDS"    // rounds of the ceiling rows e, c-max, g (default 3)
)

const (
	namespaces    = 20
	secretBytes   = 1024
	rawWorkers    = 64
	fgInterval    = 50 * time.Millisecond
	offpeakFn     = "rekey-offpeak"
	rotateTimeout = 5 * time.Minute
)

type benchConfig struct {
	ns                                  []int
	out                                 string
	aescbcMax, kubectlMax, functionsMax int
	profileN                            int
	idle                                time.Duration
	// rounds is how many times the rows compared with the ceiling (e, c-max, g) run, back to back
	// in each round: a single 10k row varies by +-20% between runs on this machine.
	rounds int
}

func loadConfig() (benchConfig, error) {
	c := benchConfig{out: "results", aescbcMax: 50000, kubectlMax: 10000, functionsMax: 50000, idle: 15 * time.Second, rounds: 3}
	list := os.Getenv(envN)
	if list == "" {
		list = "1000,10000,50000"
	}
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 99999 {
			return c, fmt.Errorf("%s=%q: want Secret counts from 1 to 99999", envN, list)
		}
		if len(c.ns) > 0 && n <= c.ns[len(c.ns)-1] {
			return c, fmt.Errorf("%s=%q: want increasing counts (Secrets are added between them)", envN, list)
		}
		c.ns = append(c.ns, n)
	}
	c.profileN = c.ns[len(c.ns)-1]
	for env, dst := range map[string]*int{envAESCBCMax: &c.aescbcMax, envKubectlMax: &c.kubectlMax, envFunctionsMax: &c.functionsMax, envProfileN: &c.profileN} {
		if s := os.Getenv(env); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return c, fmt.Errorf("%s=%q: want a count", env, s)
			}
			*dst = n
		}
	}
	if s := os.Getenv(envRounds); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 9 {
			return c, fmt.Errorf("%s=%q: want 1 to 9 rounds", envRounds, s)
		}
		c.rounds = n
	}
	if s := os.Getenv(envOut); s != "" {
		c.out = s
	}
	if s := os.Getenv(envIdle); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("%s=%q: want a duration", envIdle, s)
		}
		c.idle = d
	}
	return c, nil
}

// BenchmarkRotation measures every way to re-encrypt N Secrets on one local control plane with the
// KMS v2 chain (the twin: rekey's plugin, the KMS stand-in, the functions on the FC runtime), and
// writes results.md, results.json and results.png. See README.md, "Figures".
func BenchmarkRotation(b *testing.B) {
	if *rekeyBin == "" {
		b.Fatal("-rekey is required (run make bench)")
	}
	cfg, err := loadConfig()
	if err != nil {
		b.Fatal(err)
	}
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		b.Fatalf("kubectl (from PATH) is required for the baseline pipelines: %v", err)
	}
	for range b.N {
		h := start(b, cfg)
		h.kubectl = kubectl
		h.note("KMS v2 calls KMS once per key version (the API server's DEK seed), not per object: the KMS column shows the " +
			"row's calls and, in parentheses, those of the rotation and adoption before it.")
		h.note("written counts Secrets whose etcd revision changed: the functions' row and the rows after it also write " +
			"the functions' own state Secrets in rekey-system.")
		h.note("Row c is rekey's default (adaptive concurrency, package shared/pace); c-max is --max-speed (fixed " +
			"--concurrency 64); e is the raw client, this machine's ceiling. g's wall time covers the off-peak ticks: " +
			"the adoption gate, the pass, the convergence pass and the verifier.")
		h.note(fmt.Sprintf("Rows run in the order of the tables. One 10k row varies by +-20%% between runs here, so e, c-max and g "+
			"run back to back in %d rounds: each shows its median round (all rounds listed), and their ratios and targets are the "+
			"median of the ratios within each round. f runs after c; d, which adds an annotation to every Secret, runs last.", cfg.rounds))
		h.note("Targets are judged for both (c-max) and the default (c): the default gives up speed for the foreground " +
			"client's latency by design, --max-speed is for maintenance windows. The foreground p99 is the 3rd-worst " +
			"of ~300 samples per row, so it is noisy (idle p99 varied 2.5-9.0 ms between runs on this machine).")
		for _, n := range cfg.ns {
			h.runN(n)
		}
		h.rep.ratios()
		h.rep.Targets = h.rep.judge()
		if err := h.rep.write(cfg.out); err != nil {
			b.Fatal(err)
		}
		fmt.Print("\n" + h.rep.markdown())
		abs, _ := filepath.Abs(cfg.out)
		b.Logf("results in %s (results.md, results.json, results.png)", abs)
	}
}

// harness is one bench run: the twin, the proxy every client goes through, the report.
type harness struct {
	b        testing.TB
	cfg      benchConfig
	ctx      context.Context
	tw       *twin.Twin
	proxy    *countingProxy
	dir      string
	kc       string // admin kubeconfig through the proxy
	kubectl  string
	admin    kubernetes.Interface // direct: seeding and the foreground client
	fgClient kubernetes.Interface
	pidFile  string
	seeded   int
	// current says whether a stored Secret is under the key new writes use.
	current func(storedvalue.Value) bool
	version string
	aesKeys []controlplane.Key
	profile string // a CPU profile written by the last rekey row, not read yet
	rep     *report
	// plSpec is rekey's priority level as shipped, while the politeness bench caps it.
	plSpec *flowcontrolv1.PriorityLevelConfigurationSpec
}

func start(b *testing.B, cfg benchConfig) *harness {
	h := &harness{b: b, cfg: cfg, ctx: context.Background(), dir: b.TempDir()}
	h.rep = &report{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Cores: runtime.NumCPU(), CPU: cpuModel(),
		SecretSize: secretBytes, Namespaces: namespaces, Ns: cfg.ns, Idle: map[int]foregroundStats{}}

	// The off-peak function runs through a wrapper that records its PID, so the bench can read its
	// peak RSS and CPU like any other client's.
	offpeak := filepath.Join(h.dir, "offpeak")
	build := exec.Command("go", "build", "-o", offpeak, "./functions/offpeak")
	build.Dir = "../.."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build the off-peak function: %v\n%s", err, out)
	}
	h.pidFile = filepath.Join(h.dir, "offpeak.pids")
	wrapper := filepath.Join(h.dir, "main")
	script := fmt.Sprintf("#!/bin/sh\necho $$ >> '%s'\nexec '%s' \"$@\"\n", h.pidFile, offpeak)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Minute)
	defer cancel()
	t0 := time.Now()
	tw, err := twin.Start(ctx, twin.Options{Repo: "../..", Binaries: map[string]string{offpeakFn: wrapper},
		Env: map[string]string{config.EnvConcurrency: strconv.Itoa(reencrypt.DefaultConcurrency)}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := tw.Stop(); err != nil {
			b.Error(err)
		}
	})
	h.tw = tw
	b.Logf("twin up in %s", time.Since(t0).Round(time.Millisecond))
	// Only the functions row rotates through an event; the others rotate muted.
	tw.MuteEvents(true)

	h.proxyAs(controlplane.AdminUser)
	// The functions get their kubeconfig from the CS stand-in: hand them one through the proxy.
	fnKC := filepath.Join(h.dir, "function.kubeconfig")
	if err := h.writeKubeconfig(twin.FunctionUser, fnKC); err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(fnKC)
	if err != nil {
		b.Fatal(err)
	}
	if err := tw.CS.Register(tw.ClusterID, string(data)); err != nil {
		b.Fatal(err)
	}
	if err := os.Remove(fnKC); err != nil {
		b.Fatal(err)
	}
	if h.admin, err = tw.AdminClient(); err != nil {
		b.Fatal(err)
	}
	if h.fgClient, err = tw.AdminClient(); err != nil { // its own transport: its own connection
		b.Fatal(err)
	}
	if h.version, err = tw.KMS.PrimaryVersion(h.ctx); err != nil {
		b.Fatal(err)
	}
	h.current = h.underKMS(h.version)
	return h
}

// proxyAs starts the counting proxy every client of a row goes through and writes h.kc, a
// kubeconfig for user through it.
func (h *harness) proxyAs(user string) {
	h.b.Helper()
	u, err := url.Parse(h.tw.Cluster.Server)
	if err != nil {
		h.b.Fatal(err)
	}
	if h.proxy, err = startProxy(u.Host); err != nil {
		h.b.Fatal(err)
	}
	h.b.Cleanup(h.proxy.Close)
	h.kc = filepath.Join(h.dir, user+".kubeconfig")
	if err := h.writeKubeconfig(user, h.kc); err != nil {
		h.b.Fatal(err)
	}
}

func (h *harness) writeKubeconfig(user, path string) error {
	token, ok := h.tw.Cluster.Token(user)
	if !ok {
		return fmt.Errorf("no token for %s", user)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["bench"] = &clientcmdapi.Cluster{Server: "https://" + h.proxy.Addr(), CertificateAuthorityData: h.tw.Cluster.CAData}
	cfg.AuthInfos["bench"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["bench"] = &clientcmdapi.Context{Cluster: "bench", AuthInfo: "bench", Namespace: "default"}
	cfg.CurrentContext = "bench"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	return nil
}

// underKMS says whether a stored value is under key version version: its KMS v2 key_id is the one
// the twin's plugins write for it (opaque on the ACK-shaped twin, not the version ID).
func (h *harness) underKMS(version string) func(storedvalue.Value) bool {
	keyID := h.tw.KeyIDFor(version)
	return func(v storedvalue.Value) bool {
		return v.Provider == storedvalue.KMSv2 && v.KeyName == kmsstack.ProviderName && v.KeyID == keyID
	}
}

func nsName(i int) string { return fmt.Sprintf("bench-%02d", i%namespaces) }

// seed adds Secrets up to n, 1 KiB of random bytes each, round-robin over the namespaces.
func (h *harness) seed(n int) {
	h.b.Helper()
	t0 := time.Now()
	for i := range namespaces {
		_, err := h.admin.CoreV1().Namespaces().Create(h.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(i)}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			h.b.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancelCause(h.ctx)
	defer cancel(nil)
	work := make(chan int)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := make([]byte, secretBytes)
			for i := range work {
				_, _ = rand.Read(v)
				s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("secret-%05d", i), Namespace: nsName(i)}, Data: map[string][]byte{"v": v}}
				if _, err := h.admin.CoreV1().Secrets(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
					cancel(fmt.Errorf("create %s/%s: %w", s.Namespace, s.Name, err))
				}
			}
		}()
	}
	for i := h.seeded; i < n && ctx.Err() == nil; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		h.b.Fatal(err)
	}
	h.b.Logf("seeded Secrets %d..%d in %s", h.seeded, n-1, time.Since(t0).Round(time.Millisecond))
	h.seeded = n
}

// scan counts the Secrets in etcd and those not under the current key.
func (h *harness) scan() (total, stale int64) {
	h.b.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 2*time.Minute)
	defer cancel()
	r, err := etcdscan.Scan(ctx, h.tw.Cluster.Etcd, twin.SecretsPrefix, h.current, etcdscan.Options{})
	if err != nil {
		h.b.Fatal(err)
	}
	return int64(r.Total), int64(r.Stale())
}

// rotateKMS creates a key version and waits until the API server writes with it. Through the
// functions' events when events is set (the rotation function records a job), muted otherwise.
func (h *harness) rotateKMS(events bool) {
	h.b.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, rotateTimeout)
	defer cancel()
	t0 := time.Now()
	var v string
	var err error
	if events {
		h.tw.MuteEvents(false)
		v, err = h.tw.Rotate(ctx)
		h.tw.MuteEvents(true)
	} else {
		v, err = h.tw.KMS.Rotate()
	}
	if err != nil {
		h.b.Fatal(err)
	}
	if err := h.tw.WaitAPIServer(ctx, v); err != nil {
		h.b.Fatal(err)
	}
	h.version, h.current = v, h.underKMS(v)
	h.b.Logf("rotated to KMS key version %s; adopted in %s", v, time.Since(t0).Round(time.Millisecond))
}

// setAESCBC makes a new aescbc key the write key (after KMS v2: the provider stays listed to read)
// and waits for the reload. kms false switches back to KMS v2 first, keeping the aescbc keys to read.
func (h *harness) setAESCBC(on bool) {
	h.b.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, rotateTimeout)
	defer cancel()
	var enc controlplane.Encryption
	if on {
		h.aesKeys = append([]controlplane.Key{controlplane.NewKey(fmt.Sprintf("bench%d", len(h.aesKeys)+1))}, h.aesKeys...)
		enc.Providers = []controlplane.Provider{controlplane.AESCBC(h.aesKeys...), h.tw.KMS.Provider(), controlplane.Identity()}
	} else {
		enc.Providers = []controlplane.Provider{h.tw.KMS.Provider(), controlplane.AESCBC(h.aesKeys...), controlplane.Identity()}
	}
	if err := h.tw.Cluster.SetEncryption(enc); err != nil {
		h.b.Fatal(err)
	}
	if on {
		key := h.aesKeys[0].Name
		h.current = func(v storedvalue.Value) bool { return v.Provider == storedvalue.AESCBC && v.KeyName == key }
		if err := h.tw.Cluster.WaitEncryptionReload(ctx, func(raw []byte) bool {
			v, err := storedvalue.Classify(raw)
			return err == nil && h.current(v)
		}); err != nil {
			h.b.Fatal(err)
		}
		return
	}
	h.current = h.underKMS(h.version)
	if err := h.tw.WaitAPIServer(ctx, h.version); err != nil {
		h.b.Fatal(err)
	}
}

// client is what a row's client reports.
type client struct {
	peakKiB int64
	cpu     time.Duration
	note    string
	// passRate is the functions' engine pass alone, in objects/s (row g).
	passRate float64
}

// runN measures every row at N Secrets.
func (h *harness) runN(n int) {
	h.seed(n)
	fg := startForeground(h.fgClient, nsName(0), "secret-00000", fgInterval)
	idle := time.NewTimer(h.cfg.idle)
	<-idle.C
	h.rep.Idle[n] = fg.stop()
	h.b.Logf("N=%d idle foreground: %+v", n, h.rep.Idle[n])

	if n > h.cfg.kubectlMax {
		h.note(fmt.Sprintf("N=%d: no kubectl rows (a, b) above %s=%d: ratios to (a) are not measured there", n, envKubectlMax, h.cfg.kubectlMax))
	}
	if n > h.cfg.functionsMax {
		h.note(fmt.Sprintf("N=%d: no functions row (g) above %s=%d", n, envFunctionsMax, h.cfg.functionsMax))
	}
	if n <= h.cfg.kubectlMax {
		h.measure(n, rowReplace, "kubectl get | kubectl replace", true, func() (client, error) {
			return h.pipeline("replace", "-f", "-")
		})
		stamp := time.Now().UTC().Format(time.RFC3339Nano)
		h.measure(n, rowAnnotateK, "kubectl get | kubectl annotate", true, func() (client, error) {
			return h.pipeline("annotate", "--overwrite", "-f", "-", reencrypt.RotationAnnotation+"="+stamp)
		})
	}
	// Rows compared by a target run next to each other, and the ceiling's rows in rounds: the same
	// rekey --max-speed run twice in a row measured 1,428 and 1,764 obj/s at 10k, and run as the
	// last row instead of the first it lost a quarter. So the ceiling (e), --max-speed (c-max) and
	// the functions (g), whose rewrites change no field, run back to back, cfg.rounds times; the
	// report keeps each one's median and judges their targets on the ratios within each round.
	// (f) follows (c); (d), which adds an annotation to every Secret, runs last.
	for round := range h.cfg.rounds {
		h.measure(n, rowRaw, fmt.Sprintf("raw client: %d workers of empty patches", rawWorkers), true, h.raw)
		h.measure(n, rowMaxSpeed, "rekey run --strategy rewrite --max-speed", true, func() (client, error) {
			return h.rekey(round == 0 && n == h.cfg.profileN, "--strategy", "rewrite", "--max-speed")
		})
		h.readProfile()
		if n <= h.cfg.functionsMax {
			h.measureFunctions(n)
		}
	}
	h.rep.collapse(n, encKMS)
	h.measure(n, rowRewrite, "rekey run --strategy rewrite (adaptive)", true, func() (client, error) {
		return h.rekey(false, "--strategy", "rewrite")
	})
	h.measure(n, rowConverged, "rekey run --strategy rewrite, converged", false, func() (client, error) {
		return h.rekey(false, "--strategy", "rewrite")
	})
	h.measure(n, rowAnnotate, "rekey run --strategy annotate (adaptive)", true, func() (client, error) {
		return h.rekey(false, "--strategy", "annotate")
	})
	if n <= h.cfg.aescbcMax {
		h.measureWith(n, rowMaxSpeed, "rekey run --strategy rewrite --max-speed", encAESCBC, h.rotateAESCBC, func() (client, error) {
			return h.rekey(false, "--strategy", "rewrite", "--max-speed")
		})
		h.measureWith(n, rowRaw, fmt.Sprintf("raw client: %d workers of empty patches", rawWorkers), encAESCBC, h.rotateAESCBC, h.raw)
		h.setAESCBC(false)
	}
}

func (h *harness) rotateAESCBC() { h.setAESCBC(true) }

func (h *harness) note(s string) { h.rep.Notes = append(h.rep.Notes, s) }

// measure rotates the KMS key (when rotate) and measures run as row id.
func (h *harness) measure(n int, id, method string, rotate bool, run func() (client, error)) {
	prepare := func() { h.rotateKMS(false) }
	if !rotate {
		prepare = nil
	}
	h.measureWith(n, id, method, encKMS, prepare, run)
}

// measureWith runs prepare (a rotation; nil for none), then run, with every counter around it,
// and checks from etcd that no Secret is left stale.
func (h *harness) measureWith(n int, id, method, enc string, prepare func(), run func() (client, error)) *row {
	h.b.Helper()
	kms := h.tw.KMS.Server()
	rotEnc, rotDec := kms.Calls("Encrypt"), kms.Calls("Decrypt")
	if prepare != nil {
		prepare()
	}
	total, stale := h.scan()
	faced := stale
	if prepare == nil {
		faced = total
	}
	revs, err := h.tw.SecretRevisions(h.ctx)
	if err != nil {
		h.b.Fatal(err)
	}
	enc0, dec0 := kms.Calls("Encrypt"), kms.Calls("Decrypt")
	api0, etcd0 := h.serverCPU()
	bytes0 := h.proxy.Received()
	fg := startForeground(h.fgClient, nsName(0), "secret-00000", fgInterval)
	t0 := time.Now()
	c, err := run()
	wall := time.Since(t0)
	fgs := fg.stop()
	if err != nil {
		h.b.Fatalf("N=%d %s (%s): %v", n, id, method, err)
	}
	api1, etcd1 := h.serverCPU()
	r := row{N: n, ID: id, Method: method, Encryption: enc, Objects: faced, Seconds: wall.Seconds(),
		ObjectsPerSecond: float64(faced) / wall.Seconds(), PeakRSSKiB: c.peakKiB, ClientCPUSeconds: c.cpu.Seconds(),
		BytesReceived: h.proxy.Received() - bytes0, KMSEncrypt: kms.Calls("Encrypt") - enc0, KMSDecrypt: kms.Calls("Decrypt") - dec0,
		RotationKMSEncrypt: enc0 - rotEnc, RotationKMSDecrypt: dec0 - rotDec,
		APIServerCPUPer1k: (api1 - api0).Seconds() / float64(n) * 1000, EtcdCPUPer1k: (etcd1 - etcd0).Seconds() / float64(n) * 1000,
		Foreground: fgs, PassObjectsPerSecond: c.passRate, Note: c.note}
	after, err := h.tw.SecretRevisions(h.ctx)
	if err != nil {
		h.b.Fatal(err)
	}
	for k, rev := range after {
		if revs[k] != rev {
			r.Written++
		}
	}
	if _, left := h.scan(); left != 0 {
		h.b.Fatalf("N=%d %s (%s) left %d of %d Secrets stale", n, id, method, left, faced)
	}
	h.rep.Rows = append(h.rep.Rows, r)
	h.b.Logf("N=%d %-6s %-7s %-45s %8.2fs %7.0f obj/s  RSS %s MiB  written %d  fg p99 %.2fms  %s", n, id, enc, method, r.Seconds,
		r.ObjectsPerSecond, mib(r.PeakRSSKiB), r.Written, fgs.P99ms, r.Note)
	return &h.rep.Rows[len(h.rep.Rows)-1]
}

func (h *harness) serverCPU() (api, etcd time.Duration) {
	h.b.Helper()
	var err error
	if api, err = procCPU(h.tw.Cluster.APIServerPID()); err != nil {
		h.b.Fatal(err)
	}
	if etcd, err = procCPU(h.tw.Cluster.EtcdPID()); err != nil {
		h.b.Fatal(err)
	}
	return api, etcd
}

func rusageCPU(ps *os.ProcessState) time.Duration {
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pipeline runs `kubectl get secrets -A -o json | kubectl <verb...>` through the proxy.
func (h *harness) pipeline(verb ...string) (client, error) {
	get := exec.CommandContext(h.ctx, h.kubectl, "get", "secrets", "-A", "-o", "json")
	act := exec.CommandContext(h.ctx, h.kubectl, verb...)
	for _, c := range []*exec.Cmd{get, act} {
		c.Env = append(os.Environ(), "KUBECONFIG="+h.kc)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return client{}, err
	}
	var getErr, actErr bytes.Buffer
	get.Stdout, get.Stderr = w, &getErr
	act.Stdin, act.Stdout, act.Stderr = r, nil, &actErr
	if err := get.Start(); err != nil {
		return client{}, err
	}
	if err := act.Start(); err != nil {
		_ = get.Process.Kill()
		_ = get.Wait()
		return client{}, err
	}
	w.Close()
	r.Close()
	pids := []int{get.Process.Pid, act.Process.Pid}
	hwm := watchHWM(func() []int { return pids })
	gerr, aerr := get.Wait(), act.Wait()
	peak := hwm.stop()
	if gerr != nil || aerr != nil {
		return client{}, fmt.Errorf("kubectl get: %v %s; kubectl %s: %v %s", gerr, tail(getErr.String()), verb[0], aerr, tail(actErr.String()))
	}
	return client{peakKiB: peak, cpu: rusageCPU(get.ProcessState) + rusageCPU(act.ProcessState), note: "peak RSS: both processes"}, nil
}

// rekey runs `rekey run` through the proxy and checks its JSON summary.
func (h *harness) rekey(profile bool, args ...string) (client, error) {
	cmd := exec.CommandContext(h.ctx, *rekeyBin, append([]string{"run", "--kubeconfig", h.kc, "--output", "json", "--progress", "never"}, args...)...)
	cmd.Env = os.Environ()
	var prof string
	if profile {
		var err error
		if prof, err = filepath.Abs(filepath.Join(h.cfg.out, "rekey-cpu.pprof")); err != nil {
			return client{}, err
		}
		if err := os.MkdirAll(filepath.Dir(prof), 0o755); err != nil {
			return client{}, err
		}
		cmd.Env = append(cmd.Env, "REKEY_CPUPROFILE="+prof)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return client{}, err
	}
	pid := cmd.Process.Pid
	hwm := watchHWM(func() []int { return []int{pid} })
	err := cmd.Wait()
	peak := hwm.stop()
	if err != nil {
		return client{}, fmt.Errorf("%w: %s", err, tail(stderr.String()))
	}
	var s reencrypt.Summary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		return client{}, fmt.Errorf("summary: %w", err)
	}
	if s.Total.Failed != 0 || !s.Complete {
		return client{}, fmt.Errorf("%d objects failed, complete %v", s.Total.Failed, s.Complete)
	}
	c := client{peakKiB: peak, cpu: rusageCPU(cmd.ProcessState),
		note: fmt.Sprintf("rewritten %d, current %d, retries %d; pass %.2fs (%.0f obj/s; wall time adds start-up)",
			s.Total.Rewritten, s.Total.Current, s.Retries, s.DurationSeconds, s.ObjectsPerSecond)}
	if p := s.Pace; p != nil {
		c.note += fmt.Sprintf("; pace: %d in flight at the end (peak %d), baseline %.1f ms at %d in flight, %d slowdowns, %d 429s; %s",
			p.Limit, p.Peak, p.BaselineMs, p.BaselineLimit, p.Decreases, p.TooManyRequests, p.Mode)
	}
	if profile {
		h.profile = prof
		c.note += "; CPU profile: " + filepath.Base(prof)
	}
	return c, nil
}

// readProfile puts the top of the CPU profile a rekey row wrote into the report (after the row:
// pprof is not timed).
func (h *harness) readProfile() {
	if h.profile == "" {
		return
	}
	top, err := exec.CommandContext(h.ctx, "go", "tool", "pprof", "-top", "-nodecount=30", *rekeyBin, h.profile).Output()
	if err != nil {
		h.b.Fatalf("pprof: %v", err)
	}
	h.rep.Profile = strings.TrimSpace(string(top))
	h.profile = ""
}

// raw runs the raw saturating client: this test binary again, as its own process.
func (h *harness) raw() (client, error) {
	cmd := exec.CommandContext(h.ctx, os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), rawEnv+"=1", rawWorkersEnv+"="+strconv.Itoa(rawWorkers), "KUBECONFIG="+h.kc)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return client{}, err
	}
	pid := cmd.Process.Pid
	hwm := watchHWM(func() []int { return []int{pid} })
	err := cmd.Wait()
	peak := hwm.stop()
	if err != nil {
		return client{}, fmt.Errorf("%w: %s", err, tail(stderr.String()))
	}
	return client{peakKiB: peak, cpu: rusageCPU(cmd.ProcessState), note: "patched " + strings.TrimSpace(stdout.String())}, nil
}

// offpeakPID is the off-peak function's latest process (0 before its first invocation).
func (h *harness) offpeakPID() int {
	b, err := os.ReadFile(h.pidFile)
	if err != nil {
		return 0
	}
	lines := strings.Fields(string(b))
	if len(lines) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(lines[len(lines)-1])
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return 0
	}
	return pid
}

// measureFunctions is row g: a rotation event reaches the rotation function, which records a job;
// in-window ticks of the off-peak timer run it until the version is verified. Wall time covers the
// ticks: the adoption gate, the pass, the convergence pass and the verifier.
func (h *harness) measureFunctions(n int) {
	h.measureWith(n, rowFunctions, "functions: rotation event, off-peak ticks until verified", encKMS, func() { h.rotateKMS(true) }, func() (client, error) {
		pid0 := h.offpeakPID()
		var cpu0 time.Duration
		if pid0 != 0 {
			if err := resetHWM(pid0); err != nil {
				return client{}, err
			}
			cpu0, _ = procCPU(pid0)
		}
		hwm := watchHWM(func() []int {
			if p := h.offpeakPID(); p != 0 {
				return []int{p}
			}
			return nil
		})
		ctx, cancel := context.WithTimeout(h.ctx, 30*time.Minute)
		defer cancel()
		calls, err := h.tw.TickUntilVerified(ctx, h.version, 50, nil)
		peak := hwm.stop()
		if err != nil {
			return client{}, err
		}
		c := client{peakKiB: peak}
		if pid := h.offpeakPID(); pid != 0 {
			cpu1, _ := procCPU(pid)
			if pid != pid0 {
				cpu0 = 0
			}
			c.cpu = cpu1 - cpu0
		}
		pass, conv, err := passSeconds(calls)
		if err != nil {
			return client{}, err
		}
		c.passRate = float64(n) / max(pass, 1e-9)
		c.note = fmt.Sprintf("%d ticks; pass %.2fs (%.0f obj/s), convergence pass %.2fs", len(calls), pass, c.passRate, conv)
		return c, nil
	})
}

// passSeconds adds up the durations of the off-peak invocations' passes and convergence passes.
func passSeconds(calls []twin.Invocation) (pass, conv float64, err error) {
	type summary struct {
		DurationSeconds float64 `json:"durationSeconds"`
	}
	type detail struct {
		Summary     *summary `json:"summary"`
		Convergence *summary `json:"convergence"`
	}
	for _, c := range calls {
		if c.Result.Error != nil {
			return 0, 0, fmt.Errorf("off-peak invocation %s failed: %s", c.Result.RequestID, c.Result.Error.Message)
		}
		var r handler.OffPeakResult
		if err := json.Unmarshal(c.Result.Body, &r); err != nil {
			return 0, 0, fmt.Errorf("off-peak result: %w", err)
		}
		for _, cl := range r.Clusters {
			for _, j := range cl.Jobs {
				raw, err := json.Marshal(j.Outcome.Detail)
				if err != nil {
					return 0, 0, fmt.Errorf("off-peak result: %w", err)
				}
				var d detail
				if err := json.Unmarshal(raw, &d); err != nil {
					return 0, 0, fmt.Errorf("off-peak result: %w", err)
				}
				if d.Summary != nil {
					pass += d.Summary.DurationSeconds
				}
				if d.Convergence != nil {
					conv += d.Convergence.DurationSeconds
				}
			}
		}
	}
	return pass, conv, nil
}

func tail(s string) string {
	if len(s) > 600 {
		return "..." + s[len(s)-600:]
	}
	return s
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown CPU"
}
