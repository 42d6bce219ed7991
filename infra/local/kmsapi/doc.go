// Package kmsapi is a local stand-in for Alibaba Cloud Key Management Service
// (KMS API version 2016-01-20, RPC style) plus the ActionTrail LookupEvents
// operation (version 2020-07-06), close enough to the real wire format that the
// unmodified github.com/aliyun/alibaba-cloud-sdk-go clients (services/kms and
// services/actiontrail) work against it once client.Domain points at it.
//
// A Server is an http.Handler. It verifies the RPC HMAC-SHA1 signature
// (SignatureVersion 1.0) of every request against a configured set of
// AccessKey pairs, optionally bound to an STS SecurityToken, and answers
// errors in the real shape: a non-2xx status with a JSON body carrying Code,
// Message, RequestId, HostId and Recommend, which the SDK turns into an
// *errors.ServerError.
//
// Keys are symmetric (Aliyun_AES_256 by default). Every key version owns a
// fresh random AES key; Encrypt and GenerateDataKey seal with AES-GCM under
// the primary version and produce a self-describing ciphertext blob (see
// envelope.go) that names the key and version, so Decrypt needs no KeyId and
// old blobs keep decrypting after rotation. Automatic rotation, scheduled
// deletion and STS expiry are evaluated against an injected clock on every
// request and, optionally, by Run.
//
// State (keys, versions, key material, aliases, rotation policies) is written
// atomically to a JSON file (mode 0600) after every mutation and loaded by
// NewServer, so a restart loses nothing. The file holds raw key material: it
// is a test fixture, not a secret store.
//
// Every call, successful or not, produces an ActionTrail-shaped Record that
// never contains plaintext, data keys or ciphertext blobs. Records are kept in
// memory (the last Options.RecordLimit), passed to Options.OnRecord, and served
// by LookupEvents.
//
// All exported methods of Server are safe for concurrent use.
package kmsapi
