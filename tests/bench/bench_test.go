package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/seed"
	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

var (
	rekeyBin  = flag.String("rekey", "", "path of the rekey binary (make bench passes bin/rekey)")
	count     = flag.Int("secrets", 10000, "number of Secrets")
	sweep     = flag.String("sweep", "8,16,32,64,128", "rekey --concurrency values to measure")
	baselines = flag.Bool("baselines", true, "also time the kubectl pipelines (off: quick rekey-only iterations)")
)

type result struct {
	method  string
	seconds float64
	rssKiB  int64
	cpu     float64 // rekey's user+system CPU seconds
	stale   int
}

// BenchmarkRotation10k rotates the key before each method so every method faces the same number of
// stale Secrets, then times it and checks from etcd that it rewrote them all.
func BenchmarkRotation10k(b *testing.B) {
	if *rekeyBin == "" {
		b.Fatal("-rekey is required (run make bench)")
	}
	if _, err := exec.LookPath("kubectl"); err != nil {
		b.Fatalf("kubectl is required for the baseline pipelines: %v", err)
	}
	ctx := context.Background()
	keys := []controlplane.Key{controlplane.NewKey("key1")}
	c := controlplane.StartT(b, controlplane.Options{Encryption: encryption(keys)})
	cs, err := kubernetes.NewForConfig(c.RestConfig("admin"))
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if _, err := seed.Secrets(ctx, cs, seed.Options{Count: *count, Namespaces: []string{"ns-1", "ns-2", "ns-3", "ns-4", "ns-5"}, Size: 512, Workers: 32}); err != nil {
		b.Fatal(err)
	}
	b.Logf("created %d Secrets of 512 random bytes in %s", *count, time.Since(start).Round(time.Millisecond))
	kubeconfig := filepath.Join(b.TempDir(), "kubeconfig")
	if err := c.WriteKubeconfig("admin", kubeconfig); err != nil {
		b.Fatal(err)
	}

	rotate := func() int {
		b.Helper()
		keys = append([]controlplane.Key{controlplane.NewKey(fmt.Sprintf("key%d", len(keys)+1))}, keys...)
		if err := c.SetEncryption(*encryption(keys)); err != nil {
			b.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if err := c.WaitEncryptionReload(wctx, func(raw []byte) bool { return under(raw, keys[0].Name) }); err != nil {
			b.Fatal(err)
		}
		return scanStale(b, c, keys[0].Name)
	}
	measure := func(method string, run func() (*syscall.Rusage, error)) result {
		b.Helper()
		stale := rotate()
		t0 := time.Now()
		ru, err := run()
		d := time.Since(t0)
		if err != nil {
			b.Fatalf("%s: %v", method, err)
		}
		if left := scanStale(b, c, keys[0].Name); left != 0 {
			b.Fatalf("%s left %d of %d Secrets stale", method, left, stale)
		}
		r := result{method: method, seconds: d.Seconds(), stale: stale}
		if ru != nil {
			r.rssKiB = ru.Maxrss
			r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
		}
		b.Logf("%-34s %7.2fs %7.0f obj/s  peak RSS %s  rekey CPU %.1fs", method, r.seconds, float64(stale)/r.seconds, rssText(r.rssKiB), r.cpu)
		return r
	}
	shell := func(pipeline string) func() (*syscall.Rusage, error) {
		return func() (*syscall.Rusage, error) {
			cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", pipeline)
			cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = nil, &stderr
			if err := cmd.Run(); err != nil {
				return nil, fmt.Errorf("%w: %s", err, tail(stderr.String()))
			}
			return nil, nil
		}
	}
	rekey := func(args ...string) func() (*syscall.Rusage, error) {
		return func() (*syscall.Rusage, error) {
			cmd := exec.CommandContext(ctx, *rekeyBin, append([]string{"run", "--kubeconfig", kubeconfig, "--output", "json"}, args...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				return nil, err
			}
			hwm := watchHWM(cmd.Process.Pid)
			err := cmd.Wait()
			peak := hwm()
			if err != nil {
				return nil, fmt.Errorf("%w: %s", err, tail(stderr.String()))
			}
			var s reencrypt.Summary
			if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
				return nil, fmt.Errorf("summary: %w", err)
			}
			if s.Total.Failed != 0 {
				return nil, fmt.Errorf("%d objects failed", s.Total.Failed)
			}
			ru := *cmd.ProcessState.SysUsage().(*syscall.Rusage)
			// ru_maxrss of a child started by Go counts the parent's pages shared before exec
			// (vfork), so it reports the test binary's size; VmHWM of the exec'd image does not.
			ru.Maxrss = peak

			return &ru, nil
		}
	}

	var replace, annotate result
	if *baselines {
		replace = measure("kubectl get | kubectl replace", shell(`kubectl get secrets -A -o json | kubectl replace -f - >/dev/null`))
		annotate = measure("kubectl get | kubectl annotate", shell(`kubectl get secrets -A -o json | kubectl annotate --overwrite -f - encryption-key-rotation-time="$(date -u +%Y-%m-%dT%H:%M:%SZ)" >/dev/null`))
	}
	engine := measure("rekey run (default concurrency)", rekey())
	engineAnnotate := measure("rekey run --strategy annotate", rekey("--strategy", "annotate"))
	var best result
	for _, n := range strings.Split(*sweep, ",") {
		r := measure("rekey run --concurrency "+n, rekey("--concurrency", n))
		if best.seconds == 0 || r.seconds < best.seconds {
			best = r
		}
	}

	rate := func(r result) float64 {
		if r.seconds == 0 {
			return 0
		}
		return float64(r.stale) / r.seconds
	}
	fmt.Printf("\n%d stale Secrets per method, one control plane, 2 cores\n", *count)
	fmt.Printf("%-34s %10s %12s %10s\n", "method", "obj/s", "peak RSS", "rekey CPU")
	for _, r := range []result{replace, annotate, engine, engineAnnotate, best} {
		if r.seconds > 0 {
			fmt.Printf("%-34s %10.0f %12s %9.1fs\n", r.method, rate(r), rssText(r.rssKiB), r.cpu)
		}
	}
	if !*baselines {
		b.ReportMetric(rate(engine), "rekey-obj/s")
		b.ReportMetric(float64(engine.rssKiB)/1024, "rekey-peak-MiB")
		return
	}
	fmt.Printf("rekey (default) vs replace pipeline:  %.1fx (target >= 4x)\n", rate(engine)/rate(replace))
	fmt.Printf("rekey (default) vs annotate pipeline: %.1fx (target >= 6x)\n", rate(engine)/rate(annotate))
	fmt.Printf("rekey peak RSS: %s (target <= 64 MiB); fastest sweep point: %s\n", rssText(engine.rssKiB), best.method)
	b.ReportMetric(rate(engine), "rekey-obj/s")
	b.ReportMetric(rate(engine)/rate(replace), "x-replace")
	b.ReportMetric(rate(engine)/rate(annotate), "x-annotate")
	b.ReportMetric(float64(engine.rssKiB)/1024, "rekey-peak-MiB")
}

func encryption(keys []controlplane.Key) *controlplane.Encryption {
	return &controlplane.Encryption{Providers: []controlplane.Provider{controlplane.AESCBC(keys...), controlplane.Identity()}}
}

func under(raw []byte, key string) bool {
	v, err := storedvalue.Classify(raw)
	return err == nil && v.Provider == storedvalue.AESCBC && v.KeyName == key
}

func scanStale(b *testing.B, c *controlplane.Cluster, key string) int {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := etcdscan.Scan(ctx, c.Etcd, "/registry/secrets/", func(v storedvalue.Value) bool {
		return v.Provider == storedvalue.AESCBC && v.KeyName == key
	}, etcdscan.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return r.Stale()
}

func rssText(kib int64) string {
	if kib == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(kib)/1024)
}

func tail(s string) string {
	if len(s) > 400 {
		return "..." + s[len(s)-400:]
	}
	return s
}

// watchHWM samples the VmHWM (peak resident set) of a running process every 10 ms; the returned
// function stops sampling and returns the largest value seen, in KiB.
func watchHWM(pid int) func() int64 {
	var peak atomic.Int64
	done := make(chan struct{})
	stopped := make(chan struct{})
	sample := func() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				var kib int64
				if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kib); err == nil && kib > peak.Load() {
					peak.Store(kib)
				}
			}
		}
	}
	go func() {
		defer close(stopped)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			sample()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(done)
		<-stopped
		return peak.Load()
	}
}
