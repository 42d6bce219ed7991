// Package verify is rekey's envelope verifier: it checks, layer by layer, that a cluster's Secrets
// are encrypted under the current KMS key version and that the key can serve the API server, and
// returns one Report with a PASS/FAIL verdict and the reasons.
//
// Layers (each runs only when its inputs are given):
//   - kms: the key is Enabled (not Disabled or PendingDeletion), its primary version is among its
//     versions, its rotation policy, and a canary GenerateDataKey -> Decrypt round trip under the
//     primary version.
//   - storage: every value under /registry/<resource>/ in etcd is a KMS v2 EncryptedObject whose
//     keyID is the primary version (self-managed clusters and the local twin).
//   - convergence: a rewrite pass in which no object changed resourceVersion proves that no object
//     was stale on any API server that served it (managed clusters without etcd access).
//   - apiserver: /readyz/kms-providers answers ok.
//   - audit: ActionTrail shows the cluster's KMS identity calling Encrypt/Decrypt/GenerateDataKey
//     on the key since the rotation, and which versions it used.
package verify
