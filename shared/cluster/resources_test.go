package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	clienttesting "k8s.io/client-go/testing"
)

func fakeDiscovery() *fakediscovery.FakeDiscovery {
	d := &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{}}
	d.Resources = []*metav1.APIResourceList{
		{GroupVersion: "v1", APIResources: []metav1.APIResource{
			{Name: "secrets", Namespaced: true, Kind: "Secret", Verbs: []string{"list", "get", "patch"}},
			{Name: "configmaps", Namespaced: true, Kind: "ConfigMap", Verbs: []string{"list", "get", "patch"}},
			{Name: "namespaces", Namespaced: false, Kind: "Namespace", Verbs: []string{"list", "get", "patch"}},
		}},
		{GroupVersion: "apps/v1", APIResources: []metav1.APIResource{
			{Name: "deployments", Namespaced: true, Kind: "Deployment", Verbs: []string{"list", "get", "patch"}},
		}},
	}
	d.FakedServerVersion = &version.Info{GitVersion: "v1.37.2"}
	return d
}

func TestResolveTargets(t *testing.T) {
	d := fakeDiscovery()
	got, err := ResolveTargets(d, []string{" Secrets", "", "deployments.apps", "secrets", "configmaps"})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name string
		gvr  schema.GroupVersionResource
	}{
		{"secrets", schema.GroupVersionResource{Version: "v1", Resource: "secrets"}},
		{"deployments.apps", schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}},
		{"configmaps", schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}},
	}
	if len(got) != len(want) {
		t.Fatalf("targets = %+v, want %d (duplicates and blanks dropped)", got, len(want))
	}
	for i, w := range want {
		if got[i].Name != w.name || got[i].GVR != w.gvr {
			t.Errorf("target %d = %+v, want %s %v", i, got[i], w.name, w.gvr)
		}
	}
}

func TestResolveTargetsRejects(t *testing.T) {
	d := fakeDiscovery()
	for names, want := range map[string]string{
		"namespaces":   "cluster-scoped",
		"nosuchthings": "nosuchthings",
		"secrets.apps": "secrets.apps",
		"":             "no resources given",
	} {
		_, err := ResolveTargets(d, strings.Split(names, ","))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want it to mention %q", names, err, want)
		}
	}
}

func TestServerVersion(t *testing.T) {
	d := fakeDiscovery()
	v, err := ServerVersion(context.Background(), d)
	if err != nil || v != "v1.37.2" {
		t.Fatalf("version %q, %v", v, err)
	}
	d.PrependReactor("get", "version", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	if _, err := ServerVersion(context.Background(), d); err == nil || !strings.Contains(err.Error(), "server version") {
		t.Fatalf("err = %v, want a wrapped discovery error", err)
	}
}
