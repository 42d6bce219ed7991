// Package e2e holds rekey's end-to-end tests. They start a real etcd and kube-apiserver on loopback
// (infra/local/controlplane), encrypt Secrets for real, run rekey, and prove every claim by reading
// the raw values in etcd. The binaries are built by `make tools`; when they are missing the tests
// fail, they never skip.
package e2e
