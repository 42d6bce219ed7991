package cluster

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"

	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// ServerVersion returns the API server's git version, e.g. "v1.37.2".
func ServerVersion(ctx context.Context, d discovery.DiscoveryInterface) (string, error) {
	_ = ctx // discovery's ServerVersion takes no context; its client has the request timeout
	v, err := d.ServerVersion()
	if err != nil {
		return "", fmt.Errorf("read server version: %w", err)
	}
	return v.GitVersion, nil
}

// ResolveTargets maps names like "secrets", "configmaps" or "deployments.apps" to namespaced
// resources the server serves, at their preferred version. Cluster-scoped or unknown resources are
// an error: rekey only rewrites namespaced objects.
func ResolveTargets(d discovery.DiscoveryInterface, names []string) ([]reencrypt.Target, error) {
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(d))
	var out []reencrypt.Target
	seen := map[schema.GroupVersionResource]bool{}
	for _, raw := range names {
		name := strings.TrimSpace(strings.ToLower(raw))
		if name == "" {
			continue
		}
		resource, group, _ := strings.Cut(name, ".")
		gvr, err := mapper.ResourceFor(schema.GroupVersionResource{Group: group, Resource: resource})
		if err != nil {
			return nil, fmt.Errorf("resource %q: %w", raw, err)
		}
		gvk, err := mapper.KindFor(gvr)
		if err != nil {
			return nil, fmt.Errorf("resource %q: %w", raw, err)
		}
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return nil, fmt.Errorf("resource %q: %w", raw, err)
		}
		if m.Scope.Name() != "namespace" {
			return nil, fmt.Errorf("resource %q is cluster-scoped; rekey rewrites namespaced resources only", raw)
		}
		if seen[gvr] {
			continue
		}
		seen[gvr] = true
		out = append(out, reencrypt.Target{Name: name, GVR: gvr})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no resources given")
	}
	return out, nil
}
