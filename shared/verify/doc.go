// Package verify is rekey's envelope verifier: it checks, layer by layer, that a cluster's Secrets
// are encrypted under the current KMS key version and that the key can serve the API server, and
// returns one Report with a PASS/FAIL verdict and the reasons.
//
// Layers (Inputs.Layers lists those to run; by default every layer whose inputs are given):
//   - kms: the key is Enabled (not Disabled or PendingDeletion), its primary version is among its
//     versions, its rotation policy, and a canary GenerateDataKey -> Decrypt round trip under the
//     primary version.
//   - storage: every value of the resources in etcd (found under the API server's --etcd-prefix
//     with etcdscan.ResourcePrefix) is a KMS v2 EncryptedObject whose keyID is the primary version.
//     A resource with no value fails (wrong etcd, wrong prefix, the events etcd), and so do
//     identity (plaintext) and unreadable values, with or without a key.
//   - convergence: a rewrite pass in which no object changed resourceVersion proves that no object
//     was stale on any API server that served it (managed clusters without etcd access).
//   - apiserver: /readyz/kms-providers answers ok.
//   - audit: ActionTrail shows the cluster's KMS identity (a RAM role, or a RAM user) calling
//     Encrypt/Decrypt/GenerateDataKey on the key since the rotation (at most 90 days back), and
//     which versions it used. An empty window is a warning, not a failure.
//
// A report PASSes only when no layer fails and at least one evidence layer (storage, convergence
// or audit) passes: the kms and apiserver layers alone prove nothing about what is stored.
//
// Every report also carries a Retirement: per KMS v2 key ID other than the primary version, how many
// stored objects still depend on it, and whether it is safe to retire the old versions (disable the
// key or schedule its deletion once the cluster no longer uses it). Only a complete etcd scan can
// say safe; with the API only (the convergence pass) or without evidence the answer is "cannot
// tell", which is not safe. The key the cluster encrypts with is never safe to disable.
package verify
