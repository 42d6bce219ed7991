// Package kmsplugin is a Kubernetes KMS v2 plugin backed by Alibaba Cloud KMS, for clusters that
// manage their own kube-apiserver (Alibaba's public ack-kms-plugin speaks KMS v1 only).
//
// [Service] implements k8s.io/kms/pkg/service.Service for one KMS key:
//
//   - Status reports healthz "ok" and key_id = the key's PrimaryKeyVersion while DescribeKey says
//     the key is Enabled. The answer is cached and refreshed every StatusInterval (default 10s) by
//     [Service.Watch], so Status never waits on KMS once the first refresh is done. When the key is
//     Disabled, PendingDeletion or not found, or access is denied, healthz explains the problem at
//     once and key_id stays the last one known. KMS being unreachable (transport faults,
//     timeouts, throttling, 5xx) is reported only once ServiceOptions.HealthGracePeriod (default
//     45s) has passed since the last successful KMS call: every API server fails its readyz on an
//     unhealthy Status, so a short KMS blip must not take them all out of service at once.
//   - Encrypt sends the API server's DEK (or KDF seed) to KMS Encrypt and returns the CiphertextBlob
//     as the ciphertext and the KeyVersionId as key_id, so the API server sees a new key_id, and
//     marks data for re-encryption, exactly when the KMS key rotates. The KMS key ID travels in the
//     annotation [AnnotationKeyID].
//   - Ciphertexts up to 1024 bytes are accepted (the API server's limit); Encrypt refuses a
//     longer one, Decrypt refuses one without calling KMS.
//   - Decrypt sends the blob to KMS Decrypt (the blob names its key and version, so ciphertexts of
//     earlier versions, or of an earlier key, keep decrypting) and refuses the answer when the
//     version KMS reports is not the request's key_id.
//
// [Run] serves a Service over gRPC on a unix socket (mode 0600) until its context ends, then stops
// gracefully. Logs never contain plaintext, DEKs, ciphertexts or credentials; key IDs and key
// version IDs appear only through kms.Redact.
//
// The RAM identity the plugin runs as needs kms:DescribeKey, kms:Encrypt and kms:Decrypt on the
// key; command rekey-kms-plugin gets its credentials from the Alibaba Cloud credentials chain
// (package alicloud).
package kmsplugin
