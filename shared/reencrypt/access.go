package reencrypt

import (
	"context"
	"fmt"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
)

// AccessCheck reports whether the caller's identity may use verb on resource in namespace ("" for
// all namespaces). The engine asks it after a 403, to tell an authorization denial (stop the run)
// from an admission denial (fail the object).
type AccessCheck func(ctx context.Context, verb string, resource schema.GroupVersionResource, namespace string) (bool, error)

// SelfSubjectAccessReview returns an AccessCheck that asks the API server with a
// SelfSubjectAccessReview, the same question the authorizer answered for the request.
func SelfSubjectAccessReview(c authzclient.SelfSubjectAccessReviewsGetter) AccessCheck {
	return func(ctx context.Context, verb string, gvr schema.GroupVersionResource, ns string) (bool, error) {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: gvr.Group, Resource: gvr.Resource},
		}}
		res, err := c.SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			return false, fmt.Errorf("self subject access review %s %s: %w", verb, gvr.GroupResource(), err)
		}
		return res.Status.Allowed, nil
	}
}

// accessCache asks an AccessCheck once per verb, resource and namespace.
type accessCache struct {
	mu sync.Mutex
	m  map[accessKey]*accessAnswer
}

type accessKey struct {
	verb, namespace string
	gvr             schema.GroupVersionResource
}

type accessAnswer struct {
	once    sync.Once
	allowed bool
	err     error
}

func (c *accessCache) check(ctx context.Context, f AccessCheck, timeout time.Duration, verb string, gvr schema.GroupVersionResource, ns string) (bool, error) {
	k := accessKey{verb: verb, namespace: ns, gvr: gvr}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[accessKey]*accessAnswer{}
	}
	a := c.m[k]
	if a == nil {
		a = &accessAnswer{}
		c.m[k] = a
	}
	c.mu.Unlock()
	a.once.Do(func() {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		a.allowed, a.err = f(ctx, verb, gvr, ns)
	})
	return a.allowed, a.err
}
