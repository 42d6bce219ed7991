package reencrypt

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"

	"github.com/rekey-dev/rekey/shared/panics"
)

// panicky wraps a metadata client: it panics on the patch of one object, or on a list call.
type panicky struct {
	metadata.Interface
	patchName string                        // panic when patching this name
	onList    func(metav1.ListOptions) bool // panic when it returns true
}

func (p *panicky) Resource(gvr schema.GroupVersionResource) metadata.Getter {
	return &panickyGetter{Getter: p.Interface.Resource(gvr), p: p}
}

type panickyGetter struct {
	metadata.Getter
	p *panicky
}

func (g *panickyGetter) Namespace(ns string) metadata.ResourceInterface {
	return &panickyResource{ResourceInterface: g.Getter.Namespace(ns), p: g.p}
}

type panickyResource struct {
	metadata.ResourceInterface
	p *panicky
}

func (r *panickyResource) Patch(ctx context.Context, name string, pt types.PatchType, data []byte, o metav1.PatchOptions, sub ...string) (*metav1.PartialObjectMetadata, error) {
	if name == r.p.patchName {
		var m map[string]int
		m[name]++ // a real runtime panic: assignment to entry in nil map
	}
	return r.ResourceInterface.Patch(ctx, name, pt, data, o, sub...)
}

func (r *panickyResource) List(ctx context.Context, o metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	if r.p.onList != nil && r.p.onList(o) {
		panic("injected list panic")
	}
	return r.ResourceInterface.List(ctx, o)
}

func newPanickyEngine(t *testing.T, f *fakeAPI, p *panicky, mutate func(*Options)) *Engine {
	t.Helper()
	p.Interface = f.client(t)
	opts := Options{Targets: []Target{secrets}, Strategy: Rewrite, Concurrency: 4, PageSize: 7, Retry: fastRetry()}
	if mutate != nil {
		mutate(&opts)
	}
	e, err := New(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestPanicOnOneObjectFailsOnlyThatObject(t *testing.T) {
	f := newFakeAPI(t, 30, "a")
	e := newPanickyEngine(t, f, &panicky{patchName: "s-0005"}, nil)
	s := runOK(t, e)
	if s.Total.Failed != 1 || s.Total.Rewritten != 29 || s.Total.Listed != 30 || !s.Complete {
		t.Fatalf("summary %+v complete=%v: want 29 rewritten, 1 failed, the run complete", s.Total, s.Complete)
	}
	if s.Panics != 1 {
		t.Fatalf("panics = %d, want 1", s.Panics)
	}
	if len(s.Failures) != 1 || s.Failures[0].Name != "s-0005" || !strings.HasPrefix(s.Failures[0].Reason, "panic: ") ||
		!strings.Contains(s.Failures[0].Reason, "nil map") {
		t.Fatalf("failures = %+v, want s-0005 with reason panic: ...", s.Failures)
	}
	if s.OK() {
		t.Fatal("a run with a panicked object must not be OK")
	}
}

func TestPanicInListStopsTheRunWithAnError(t *testing.T) {
	f := newFakeAPI(t, 30, "a")
	p := &panicky{onList: func(o metav1.ListOptions) bool { return o.Continue != "" }} // the second page
	e := newPanickyEngine(t, f, p, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := e.Run(ctx)
	var pe *panics.Error
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "injected list panic") {
		t.Fatalf("Run error = %v, want the lister's panic", err)
	}
	if s.Complete || s.Panics != 1 || !strings.Contains(s.StopReason, "panic: injected list panic") {
		t.Fatalf("summary complete=%v panics=%d stop=%q", s.Complete, s.Panics, s.StopReason)
	}
	if s.Total.Listed != 7 || s.Total.Listed != s.Total.Done()+s.Total.NotAttempted {
		t.Fatalf("totals %+v: want the first page listed and accounted for", s.Total)
	}
}

func TestPanicInOnPageStopsTheRun(t *testing.T) {
	f := newFakeAPI(t, 30, "a")
	var calls atomic.Int32
	e := newPanickyEngine(t, f, &panicky{}, func(o *Options) {
		// One worker: the first page is done while later ones are not, so its position is always
		// reported (with more workers every page may finish at once, and the end of a run is
		// never reported).
		o.Concurrency = 1
		o.OnPage = func(Position, Counts) {
			calls.Add(1)
			panic("checkpoint store exploded")
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := e.Run(ctx) // must neither crash nor deadlock on the pager's lock
	if err == nil || !strings.Contains(err.Error(), "checkpoint store exploded") || !strings.Contains(err.Error(), "OnPage") {
		t.Fatalf("Run error = %v, want the OnPage panic", err)
	}
	if s.Complete || s.Panics < 1 || calls.Load() < 1 {
		t.Fatalf("complete=%v panics=%d calls=%d", s.Complete, s.Panics, calls.Load())
	}
	if s.Total.Listed != s.Total.Done()+s.Total.NotAttempted {
		t.Fatalf("totals %+v do not add up", s.Total)
	}
}

func TestPanicInOnObjectStopsTheRun(t *testing.T) {
	f := newFakeAPI(t, 30, "a")
	var n atomic.Int32
	e := newPanickyEngine(t, f, &panicky{}, func(o *Options) {
		o.OnObject = func(string, Outcome) {
			if n.Add(1) == 3 {
				panic("progress bar bug")
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := e.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "progress bar bug") || s.Complete || s.Panics != 1 {
		t.Fatalf("Run error = %v complete=%v panics=%d, want the OnObject panic to stop the run", err, s.Complete, s.Panics)
	}
}
