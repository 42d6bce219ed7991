package etcdscan

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// DefaultEtcdPrefix is the API server's default --etcd-prefix.
const DefaultEtcdPrefix = "/registry"

// specialPrefixes are the resources kube-apiserver stores under another name than their own
// (k8s.io/kubernetes pkg/kubeapiserver SpecialDefaultResourcePrefixes, v1.37).
var specialPrefixes = map[schema.GroupResource]string{
	{Group: "", Resource: "replicationcontrollers"}:     "controllers",
	{Group: "", Resource: "endpoints"}:                  "services/endpoints",
	{Group: "", Resource: "nodes"}:                      "minions",
	{Group: "", Resource: "services"}:                   "services/specs",
	{Group: "extensions", Resource: "ingresses"}:        "ingress",
	{Group: "networking.k8s.io", Resource: "ingresses"}: "ingress",
}

// builtinGroups are the API groups kube-apiserver's own storage factory serves: their objects
// live under <etcd-prefix>/<resource>/ whatever the group (deployments.apps and deployments.extensions
// share /registry/deployments/, events.k8s.io events live with core events). Every other group is
// served by the apiextensions server (custom resources), the aggregator (apiservices) or an
// aggregated API server; the first two store under <etcd-prefix>/<group>/<resource>/.
var builtinGroups = map[string]bool{
	"":                             true,
	"admissionregistration.k8s.io": true,
	"apiserverinternal.k8s.io":     true,
	"apps":                         true,
	"autoscaling":                  true,
	"batch":                        true,
	"certificates.k8s.io":          true,
	"coordination.k8s.io":          true,
	"discovery.k8s.io":             true,
	"events.k8s.io":                true,
	"extensions":                   true,
	"flowcontrol.apiserver.k8s.io": true,
	"internal.apiserver.k8s.io":    true,
	"networking.k8s.io":            true,
	"node.k8s.io":                  true,
	"policy":                       true,
	"rbac.authorization.k8s.io":    true,
	"resource.k8s.io":              true,
	"scheduling.k8s.io":            true,
	"storage.k8s.io":               true,
	"storagemigration.k8s.io":      true,
}

// ResourcePrefix returns the etcd key prefix, with its trailing slash, under which an API server
// started with --etcd-prefix etcdPrefix (empty: DefaultEtcdPrefix) stores gr:
//   - the resource's name for the groups kube-apiserver serves itself ("/registry/secrets/",
//     "/registry/deployments/" for deployments.apps), except the names it stores elsewhere
//     (services -> "/registry/services/specs/", endpoints -> "/registry/services/endpoints/",
//     nodes -> "/registry/minions/", replicationcontrollers -> "/registry/controllers/", ingresses
//     -> "/registry/ingress/");
//   - group and resource for every other group: custom resources, apiextensions.k8s.io and
//     apiregistration.k8s.io ("/registry/example.com/widgets/").
//
// It does not know clusters that override a prefix (none of kube-apiserver's flags can) or
// aggregated API servers with their own storage.
func ResourcePrefix(etcdPrefix string, gr schema.GroupResource) string {
	if etcdPrefix == "" {
		etcdPrefix = DefaultEtcdPrefix
	}
	etcdPrefix = strings.TrimSuffix(etcdPrefix, "/")
	gr = schema.GroupResource{Group: strings.ToLower(gr.Group), Resource: strings.ToLower(gr.Resource)}
	name := gr.Resource
	switch {
	case specialPrefixes[gr] != "":
		name = specialPrefixes[gr]
	case !builtinGroups[gr.Group]:
		name = gr.Group + "/" + gr.Resource
	}
	return etcdPrefix + "/" + name + "/"
}

// Count returns how many keys etcd holds under prefix ("" counts every key), reading no values.
func Count(ctx context.Context, kv clientv3.KV, prefix string) (int64, error) {
	opts := []clientv3.OpOption{clientv3.WithCountOnly()}
	key := prefix
	if prefix == "" {
		key = "\x00"
		opts = append(opts, clientv3.WithFromKey())
	} else {
		opts = append(opts, clientv3.WithPrefix())
	}
	resp, err := kv.Get(ctx, key, opts...)
	if err != nil {
		return 0, fmt.Errorf("count etcd keys under %q: %w", prefix, err)
	}
	return resp.Count, nil
}
