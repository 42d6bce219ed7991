// Package kms is rekey's narrow edge to Alibaba Cloud Key Management Service (KMS API version
// 2016-01-20).
//
// [Client] is the part of KMS rekey uses: DescribeKey, ListKeyVersions, Encrypt, Decrypt and
// GenerateDataKey, with Go-named result structs and parsed dates. [SDKClient] implements it with the
// official github.com/aliyun/alibaba-cloud-sdk-go services/kms requests, sent through
// package alicloud (the SDK client construction shared with ActionTrail: endpoint, HTTPS-only
// outside loopback, credentials chain, timeouts, sanitized errors); package kmsfake holds an
// in-memory fake for unit tests of other packages.
//
// Every SDKClient call is bounded by a per-call timeout that also cancels the HTTP request (the SDK
// itself takes no context), goes through retry.Do (throttling, 5xx and transport faults are retried
// with backoff; everything else is returned at once) and fails with an error that names the
// operation and the key by [Redact] only. Errors never carry plaintext, data keys, ciphertext blobs,
// signatures or credentials: the SDK's own error texts, which can echo the signed request URL, are
// replaced by [APIError] and a transport error that keeps only the scheme and host.
//
// Plaintext bytes travel base64-encoded in the KMS Plaintext parameter (the KMS convention), so
// Decrypt of a blob made by Encrypt returns the original bytes.
package kms
