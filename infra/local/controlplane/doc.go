// Package controlplane starts a real etcd and kube-apiserver on loopback for rekey's tests.
//
// Every claim rekey makes about encryption at rest is checked against the bytes a real
// kube-apiserver writes to a real etcd. Start (or StartT in tests) generates a CA, a serving
// certificate, a service-account key pair and a token file in a working directory, starts etcd
// and then kube-apiserver from prebuilt binaries (see infra/local/tools/build.sh, "make tools"),
// and waits until the API server reports ready. The returned Cluster carries everything a client
// needs: the server URL, the CA, tokens, a kubeconfig writer and an etcd client for reading raw
// stored values.
//
// Encryption at rest is configured with an Encryption (resources and an ordered provider list:
// Identity, AESCBC, AESGCM, Secretbox, KMSv2). A cluster started with an Encryption runs with
// --encryption-provider-config-automatic-reload=true, so SetEncryption can rewrite the file and
// WaitEncryptionReload proves, with a canary Secret read back from etcd, that the API server
// writes with the new configuration. kube-apiserver v1.37 checks the file about once a minute,
// so a reload takes up to about 60 s; RestartAPIServer applies a new file in seconds instead.
//
// Binaries are looked up in Options.BinDir, else $REKEY_BIN_DIR, else
// ${REKEY_CACHE:-$HOME/.cache/rekey}/bin. A missing binary is an error, never a skip.
//
// The harness runs on Linux (and other Unix systems, without the parent-death signal). Each
// process gets its own process group; Stop sends SIGTERM to the group and SIGKILL 10 s later.
package controlplane
