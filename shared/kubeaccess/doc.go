// Package kubeaccess gives rekey's functions a client configuration for each watched cluster.
//
// A cluster with a kubeconfig file (REKEY_KUBECONFIG_<CLUSTERID>, for self-managed clusters) is
// reached with that file. Every other cluster is an ACK cluster: its kubeconfig comes from
// Container Service DescribeClusterUserKubeconfig (GET /k8s/{ClusterId}/user_config) with
// PrivateIpAddress=true (the function runs in the cluster's VPC) and a short
// TemporaryDurationMinutes, called under the function's own STS identity (an alicloud.Provider,
// Function Compute's per-invocation credentials in production). The kubeconfig's Kubernetes
// identity is then the function's RAM role: bind it with infra/rbac/rekey-function.yaml.
//
// Configurations from CS are cached until shortly before their credential expires, so that a warm
// function instance does not call CS on every invocation. TLS verification is never turned off: a
// kubeconfig that skips it is refused. Nothing here logs or returns a kubeconfig's credentials.
package kubeaccess
