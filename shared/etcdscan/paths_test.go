package etcdscan

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestResourcePrefix(t *testing.T) {
	tests := []struct {
		etcdPrefix string
		gr         string // resource.group, as schema.ParseGroupResource reads it
		want       string
	}{
		{"", "secrets", "/registry/secrets/"},
		{"/registry", "configmaps", "/registry/configmaps/"},
		{"/registry/", "secrets", "/registry/secrets/"},
		{"/custom/prefix", "secrets", "/custom/prefix/secrets/"},
		// Built-in groups: the resource name alone, never "deployments.apps".
		{"", "deployments.apps", "/registry/deployments/"},
		{"", "deployments.extensions", "/registry/deployments/"},
		{"", "cronjobs.batch", "/registry/cronjobs/"},
		{"", "events.events.k8s.io", "/registry/events/"},
		{"", "leases.coordination.k8s.io", "/registry/leases/"},
		{"", "roles.rbac.authorization.k8s.io", "/registry/roles/"},
		{"", "Deployments.Apps", "/registry/deployments/"},
		// kube-apiserver's SpecialDefaultResourcePrefixes.
		{"", "services", "/registry/services/specs/"},
		{"", "endpoints", "/registry/services/endpoints/"},
		{"", "nodes", "/registry/minions/"},
		{"", "replicationcontrollers", "/registry/controllers/"},
		{"", "ingresses.networking.k8s.io", "/registry/ingress/"},
		{"", "ingresses.extensions", "/registry/ingress/"},
		// Served by the apiextensions server and the aggregator: group and resource.
		{"", "widgets.example.com", "/registry/example.com/widgets/"},
		{"", "customresourcedefinitions.apiextensions.k8s.io", "/registry/apiextensions.k8s.io/customresourcedefinitions/"},
		{"", "apiservices.apiregistration.k8s.io", "/registry/apiregistration.k8s.io/apiservices/"},
	}
	for _, tt := range tests {
		t.Run(tt.etcdPrefix+" "+tt.gr, func(t *testing.T) {
			if got := ResourcePrefix(tt.etcdPrefix, schema.ParseGroupResource(tt.gr)); got != tt.want {
				t.Fatalf("ResourcePrefix(%q, %q) = %q, want %q", tt.etcdPrefix, tt.gr, got, tt.want)
			}
		})
	}
}

func TestCountEmbeddedEtcd(t *testing.T) {
	c := startEtcd(t)
	ctx := t.Context()
	for _, k := range []string{"/registry/secrets/a/b", "/registry/secrets/a/c", "/registry/events/a/e", "/other/x"} {
		if _, err := c.Put(ctx, k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	for prefix, want := range map[string]int64{"": 4, "/registry/": 3, "/registry/secrets/": 2, "/registry/events/": 1, "/nothing/": 0} {
		got, err := Count(ctx, c.KV, prefix)
		if err != nil || got != want {
			t.Errorf("Count(%q) = %d, %v; want %d", prefix, got, err, want)
		}
	}
}
