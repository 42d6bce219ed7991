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
// Options.Replicas > 1 starts an "ACK-shaped" control plane instead: several kube-apiservers on
// the one etcd, each with its own port, encryption config file (Options.ReplicaEncryption can make
// them differ) and identity (distinct host names through the REKEY_APISERVER_HOSTNAME knob of the
// harness's kube-apiserver build, so distinct identity Leases and apiserver_id_hash metric
// labels), behind a TCP load balancer (package lb) that pins each new connection to the next
// replica, as a cloud load balancer in front of a managed control plane does. Server is then the
// load balancer; Replicas describes each replica (its own URL, identity, PID); StopReplica,
// KillReplica and StartReplica take one out and bring it back; the methods that act on "the" API
// server act on every replica and say so.
//
// Binaries are looked up in Options.BinDir, else $REKEY_BIN_DIR, else
// ${REKEY_CACHE:-$HOME/.cache/rekey}/bin. A missing binary is an error, never a skip.
//
// The harness runs on Linux (and other Unix systems, without the parent-death signal). Each
// process gets its own process group; Stop sends SIGTERM to the group and SIGKILL 10 s later.
package controlplane
