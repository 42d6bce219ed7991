package faults

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rekey-dev/rekey/cmd/rekey/cli"
)

// Cases where a process of the control plane dies in the middle of `rekey run`.

const (
	// secretsPerCase is how many Secrets each case seeds (and rewrites at least once).
	secretsPerCase = 1500
	// runQPS slows a run to about five seconds, so the fault lands in the middle of it.
	runQPS = "300"
)

// faultMidRun starts the writer, runs rekey, calls inject once a third of the pass is done (see
// passAt), and, while a run ends incomplete, runs again (at most three runs):
// an interrupted run is finished by the next one. It fails the test when the fault missed the
// run or no run completed.
func (e *env) faultMidRun(kubeconfig string, inject func(), extra ...string) (runs []cliRun, injected time.Time) {
	e.t.Helper()
	pass := e.passAt()
	e.w.start()
	fired, stop := when(pass.Load, 1, inject)
	args := e.runArgs(kubeconfig, append([]string{"--qps", runQPS}, extra...)...)
	runs = append(runs, e.cli(args...))
	stop()
	select {
	case injected = <-fired:
	default:
		e.t.Fatalf("the run ended before the fault was injected: %s", runs[0].brief())
	}
	if runs[0].end.Sub(injected) < 0 {
		e.t.Fatalf("the fault came after the run")
	}
	for len(runs) < 3 && !runs[len(runs)-1].complete() {
		runs = append(runs, e.cli(args...))
	}
	if !runs[len(runs)-1].complete() {
		e.t.Fatalf("%d runs after the fault, none completed", len(runs))
	}
	return runs, injected
}

// story tells what the runs did, for the report.
func story(runs []cliRun) string {
	var parts []string
	for i, r := range runs {
		switch {
		case i == 0 && r.complete():
			parts = append(parts, fmt.Sprintf("rode it out: exit 0, complete, %d rewritten, %d retries, %.1fs", r.summary.Total.Rewritten, r.summary.Retries, r.took.Seconds()))
		case r.complete():
			parts = append(parts, fmt.Sprintf("run %d: exit 0, complete (%d rewritten, %d current)", i+1, r.summary.Total.Rewritten, r.summary.Total.Current))
		default:
			parts = append(parts, fmt.Sprintf("run %d: %s", i+1, r.brief()))
		}
	}
	return strings.Join(parts, "; ")
}

// clearStop checks that an incomplete run said why it stopped (exit 1 and a reason) rather than
// claiming success or exiting without one.
func clearStop(t *testing.T, r cliRun, mustName ...string) {
	t.Helper()
	if r.complete() {
		return
	}
	if r.code != cli.ExitFailed && r.code != cli.ExitUsage {
		t.Errorf("an incomplete run exited %d", r.code)
	}
	why := r.stderr
	if r.summary != nil {
		why += " " + r.summary.StopReason
	}
	if strings.TrimSpace(why) == "" {
		t.Errorf("an incomplete run gave no reason: %s", r.brief())
	}
	for _, m := range mustName {
		if !strings.Contains(strings.ToLower(why), strings.ToLower(m)) {
			t.Errorf("the run's error does not name %q: %s", m, why)
		}
	}
}

// recovered is when the first complete run after the fault ended.
func recovered(runs []cliRun) time.Time {
	for _, r := range runs {
		if r.complete() {
			return r.end
		}
	}
	return time.Time{}
}

// caseAPIServerKill: kill -9 the API server a third of the way through the pass and start it again
// two seconds later (it takes a few more to be ready).
func caseAPIServerKill(t *testing.T, order int, tb *table) {
	e := newEnv(t, secretsPerCase, "kill")
	e.rotate()
	kc := e.kubeconfig()
	restart := make(chan error, 1)
	var down time.Duration
	runs, injected := e.faultMidRun(kc, func() {
		began := time.Now()
		if err := e.c.KillAPIServer(); err != nil {
			restart <- err
			return
		}
		go func() {
			time.Sleep(2 * time.Second) // the API server stays down for two seconds
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			err := e.c.StartAPIServer(ctx)
			down = time.Since(began)
			restart <- err
		}()
	})
	if err := <-restart; err != nil {
		t.Fatal(err)
	}
	clearStop(t, runs[0])
	p := e.prove(kc)
	tb.add(t, row{order: order, fault: "kill -9 kube-apiserver at 1/3 of the pass, started again 2 s later",
		happened:    fmt.Sprintf("API server unavailable %.1fs; %s", down.Seconds(), story(runs)),
		reencrypted: p.reencrypted(), lost: p.lost, recover: since(injected, recovered(runs))})
}

// caseEtcdRestart: kill -9 etcd a third of the way through the pass and start it again with its
// data two seconds later.
func caseEtcdRestart(t *testing.T, order int, tb *table) {
	e := newEnv(t, secretsPerCase, "etcd")
	e.rotate()
	kc := e.kubeconfig()
	restart := make(chan error, 1)
	var down time.Duration
	runs, injected := e.faultMidRun(kc, func() {
		began := time.Now()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			err := e.c.RestartEtcd(ctx, 2*time.Second)
			down = time.Since(began)
			restart <- err
		}()
	})
	if err := <-restart; err != nil {
		t.Fatal(err)
	}
	clearStop(t, runs[0])
	p := e.prove(kc)
	tb.add(t, row{order: order, fault: "kill -9 etcd at 1/3 of the pass, started again with its data 2 s later",
		happened:    fmt.Sprintf("etcd unavailable %.1fs; %s", down.Seconds(), story(runs)),
		reencrypted: p.reencrypted(), lost: p.lost, recover: since(injected, recovered(runs))})
}
