// Package cluster connects rekey to a Kubernetes API server: it loads a kubeconfig the way kubectl
// does, resolves user-named resources to namespaced GroupVersionResources, and checks up front
// that the identity may list, get and patch them, so a run fails before it starts rather than half
// way through.
package cluster
