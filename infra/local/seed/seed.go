// Package seed fills a local cluster with Secrets for tests, benchmarks and the demo.
package seed

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Options say how many Secrets to create and where.
type Options struct {
	// Count Secrets named secret-00000... are spread round-robin over Namespaces (created if absent).
	Count      int
	Namespaces []string
	// Size is the number of random bytes in each Secret's "v" key (default 64).
	Size int
	// Workers create Secrets in parallel (default 16).
	Workers int
}

// Secrets creates the Secrets and returns "namespace/name" -> the random value stored under "v".
func Secrets(ctx context.Context, cs kubernetes.Interface, o Options) (map[string][]byte, error) {
	if o.Count < 0 || len(o.Namespaces) == 0 {
		return nil, fmt.Errorf("seed: need a non-negative count and at least one namespace")
	}
	if o.Size <= 0 {
		o.Size = 64
	}
	if o.Workers <= 0 {
		o.Workers = 16
	}
	for _, ns := range o.Namespaces {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("seed: create namespace %s: %w", ns, err)
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	data := make(map[string][]byte, o.Count)
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan int)
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				ns := o.Namespaces[i%len(o.Namespaces)]
				name := fmt.Sprintf("secret-%05d", i)
				v := make([]byte, o.Size)
				if _, err := rand.Read(v); err != nil {
					cancel(fmt.Errorf("seed: random data: %w", err))
					return
				}
				s := &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"half": fmt.Sprint(i % 2)}},
					Data:       map[string][]byte{"v": v},
				}
				if _, err := cs.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
					cancel(fmt.Errorf("seed: create %s/%s: %w", ns, name, err))
					return
				}
				mu.Lock()
				data[ns+"/"+name] = v
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < o.Count && ctx.Err() == nil; i++ {
		select {
		case work <- i:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return data, nil
}
