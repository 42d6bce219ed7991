package faults

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
)

// writer is a concurrent application: goroutines that update Secrets' data with a full
// read-modify-write, create Secrets and delete them while rekey runs, straight to the API server
// (never through a fault proxy). Each goroutine owns its keys, so the books per key are sequential.
//
// Under faults a write can fail without its effect being known (the answer was lost, the server
// died mid-call). The books keep, per Secret, every value it may hold: the last confirmed write
// and any unconfirmed one after it, and whether it may exist. A lost update is a Secret whose data
// is none of those, one that exists though it must not (deleted and back), or one that is missing
// though it must exist.
type writer struct {
	cs         kubernetes.Interface
	generation int64 // names this writer's new Secrets apart from an earlier writer's
	namespaces []string
	books      []map[string]*book // per goroutine: "ns/name" -> book
	stopping   atomic.Bool
	wg         sync.WaitGroup
	once       sync.Once
	updates    atomic.Int64
	creates    atomic.Int64
	deletes    atomic.Int64
	unknown    atomic.Int64
	failed     atomic.Int64
	mu         sync.Mutex
	seen       []string // lost updates seen while writing
}

// generations numbers the writers of the test binary.
var generations atomic.Int64

// book is what a Secret may be.
type book struct {
	values          [][]byte // data it may hold
	present, absent bool     // it may exist / it may not exist
}

func newWriter(cs kubernetes.Interface, namespaces []string, seeded map[string][]byte, goroutines int) *writer {
	w := &writer{cs: cs, namespaces: namespaces, books: make([]map[string]*book, goroutines), generation: generations.Add(1)}
	for i := range w.books {
		w.books[i] = map[string]*book{}
	}
	keys := make([]string, 0, len(seeded))
	for k := range seeded {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		w.books[i%goroutines][k] = &book{values: [][]byte{seeded[k]}, present: true}
	}
	return w
}

// start starts the goroutines.
func (w *writer) start() {
	for g := range w.books {
		w.wg.Add(1)
		go w.loop(g)
	}
}

// stop stops the goroutines between two calls and waits for them.
func (w *writer) stop() {
	w.once.Do(func() {
		w.stopping.Store(true)
		w.wg.Wait()
	})
}

func (w *writer) ops() string {
	return fmt.Sprintf("%d updates, %d creates, %d deletes (%d unconfirmed, %d refused)", w.updates.Load(), w.creates.Load(), w.deletes.Load(), w.unknown.Load(), w.failed.Load())
}

func (w *writer) loop(g int) {
	defer w.wg.Done()
	books := w.books[g]
	keys := make([]string, 0, len(books))
	for k := range books {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	rng := rand.New(rand.NewPCG(uint64(g), 99))
	ctx := context.Background()
	for i := 0; !w.stopping.Load(); i++ {
		troubles := w.unknown.Load() + w.failed.Load()
		switch op := rng.IntN(10); {
		case op < 7:
			k := keys[rng.IntN(len(keys))]
			w.update(ctx, k, books[k])
		case op < 9:
			ns := w.namespaces[rng.IntN(len(w.namespaces))]
			k := fmt.Sprintf("%s/new-%d-%d-%d", ns, w.generation, g, i)
			b := &book{}
			books[k] = b
			keys = append(keys, k)
			w.create(ctx, k, b)
		default:
			w.delete(ctx, keys[rng.IntN(len(keys))], books)
		}
		pause := writerPace // an application's pace, leaving the two cores to the API server and rekey
		if w.unknown.Load()+w.failed.Load() != troubles {
			pause = 5 * writerPace // the server is in trouble: do not spin
		}
		time.Sleep(pause)
	}
}

func (w *writer) update(ctx context.Context, k string, b *book) {
	ns, name, _ := strings.Cut(k, "/")
	s, err := w.cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		b.present, b.absent = false, true
		return
	case err != nil:
		return
	}
	// What the server holds now must be one of the values the books allow; from here on it is
	// the only one.
	got := s.Data["v"]
	if !b.present || !b.allows(got) {
		w.lost(k + " read back an older value than its last write (or came back after a delete)")
	}
	b.values, b.present, b.absent = [][]byte{got}, true, false
	v := randomValue()
	s.Data["v"] = v
	_, err = w.cs.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{})
	switch {
	case err == nil:
		b.values = [][]byte{v}
		w.updates.Add(1)
	case notApplied(err), apierrors.IsConflict(err), apierrors.IsNotFound(err), apierrors.IsInvalid(err):
		w.failed.Add(1)
	default:
		b.values = append(b.values, v)
		w.unknown.Add(1)
	}
}

func (w *writer) create(ctx context.Context, k string, b *book) {
	ns, name, _ := strings.Cut(k, "/")
	v := randomValue()
	_, err := w.cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: map[string][]byte{"v": v}}, metav1.CreateOptions{})
	switch {
	case err == nil:
		b.values, b.present = [][]byte{v}, true
		w.creates.Add(1)
	case notApplied(err), apierrors.IsInvalid(err), apierrors.IsAlreadyExists(err):
		b.absent = true
		w.failed.Add(1)
	default:
		b.values, b.present, b.absent = [][]byte{v}, true, true
		w.unknown.Add(1)
	}
}

func (w *writer) delete(ctx context.Context, k string, books map[string]*book) {
	b := books[k]
	ns, name, _ := strings.Cut(k, "/")
	err := w.cs.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{})
	switch {
	case err == nil || apierrors.IsNotFound(err):
		b.present, b.absent = false, true
		w.deletes.Add(1)
	case notApplied(err):
		w.failed.Add(1)
	default:
		b.absent = true
		w.unknown.Add(1)
	}
}

// writerPace is the pause between two calls of one writer goroutine.
const writerPace = 15 * time.Millisecond

// notApplied reports errors that prove the request was not applied: it never reached the server
// (connection refused) or was refused before being handled (429).
func notApplied(err error) bool {
	return utilnet.IsConnectionRefused(err) || apierrors.IsTooManyRequests(err)
}

// lost records a lost update seen while writing.
func (w *writer) lost(what string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, what)
}

func (b *book) allows(v []byte) bool {
	for _, x := range b.values {
		if bytes.Equal(x, v) {
			return true
		}
	}
	return false
}

// verify reads every Secret of the writer's namespaces and returns the lost updates, named (never
// with their data).
func (w *writer) verify(ctx context.Context, t *testing.T) []string {
	t.Helper()
	all := map[string]*book{}
	for _, books := range w.books {
		for k, b := range books {
			all[k] = b
		}
	}
	w.mu.Lock()
	lost := append([]string(nil), w.seen...)
	w.mu.Unlock()
	for _, ns := range w.namespaces {
		got, err := secretsIn(ctx, w.cs, ns)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range got {
			b, ok := all[k]
			switch {
			case !ok:
				lost = append(lost, k+" exists but was never written")
			case !b.present:
				lost = append(lost, k+" was deleted but is back")
			case !b.allows(v):
				lost = append(lost, k+" holds an older value than its last write")
			}
		}
		for k, b := range all {
			if kns, _, _ := strings.Cut(k, "/"); kns == ns && !b.absent {
				if _, ok := got[k]; !ok {
					lost = append(lost, k+" is missing")
				}
			}
		}
	}
	sort.Strings(lost)
	return lost
}

func randomValue() []byte {
	b := make([]byte, 32)
	_, _ = crand.Read(b)
	return b
}
