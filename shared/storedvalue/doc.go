// Package storedvalue tells which Kubernetes encryption-at-rest provider, key and KMS key ID wrote
// a value stored in etcd, without decrypting it.
//
// [Classify] reads only the envelope around the ciphertext: the `k8s:enc:<provider>:v1:<key>:`
// prefixes, the KMS v1 DEK length header and the KMS v2 EncryptedObject protobuf, which it decodes
// with protowire and validates by the rules of k8s.io/apiserver's kmsv2.ValidateEncryptedObject
// (v0.37.2). A [Value] never holds plaintext, ciphertext, DEKs or annotation values, and no error
// from this package quotes the bytes of a value or a full KMS key ID; use [HashKeyID] to name a
// key ID in logs.
//
// Every function here is safe for concurrent use.
package storedvalue
