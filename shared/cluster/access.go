package cluster

import (
	"context"
	"fmt"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"

	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// AccessError lists the permissions the identity lacks.
type AccessError struct {
	// Missing holds entries like `patch secrets (all namespaces)`.
	Missing []string
}

// Error implements error.
func (e *AccessError) Error() string {
	return "permission denied: rekey needs " + strings.Join(e.Missing, ", ") + " (grant them with RBAC; see infra/rbac)"
}

// Verbs returns the verbs a run needs: list always, patch and get (for conflict re-reads) unless it
// is a dry run.
func Verbs(dryRun bool) []string {
	if dryRun {
		return []string{"list"}
	}
	return []string{"list", "get", "patch"}
}

// CheckAccess asks the API server (SelfSubjectAccessReview) whether the caller may use verbs on
// every target in every namespace (empty: all namespaces). It returns an *AccessError naming each
// missing permission.
func CheckAccess(ctx context.Context, c authzclient.SelfSubjectAccessReviewsGetter, targets []reencrypt.Target, namespaces []string, verbs []string) error {
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	var missing []string
	for _, t := range targets {
		for _, ns := range namespaces {
			for _, verb := range verbs {
				review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
					ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: t.GVR.Group, Resource: t.GVR.Resource},
				}}
				res, err := c.SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
				if err != nil {
					return fmt.Errorf("check %s %s access: %w", verb, t.Name, err)
				}
				if !res.Status.Allowed {
					where := "all namespaces"
					if ns != "" {
						where = "namespace " + ns
					}
					missing = append(missing, fmt.Sprintf("%s %s (%s)", verb, t.Name, where))
				}
			}
		}
	}
	if len(missing) > 0 {
		return &AccessError{Missing: missing}
	}
	return nil
}
