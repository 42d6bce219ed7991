// Package kmsfake is an in-memory kms.Client for unit tests of packages that use KMS.
//
// A [Fake] holds keys with versions and a state, answers the kms.Client methods the way KMS does
// (the primary version encrypts, a blob names its key and version, a Disabled or PendingDeletion
// key refuses cryptographic calls, an encryption context must match), returns errors shaped like
// the SDK adapter's (kms.IsKeyNotFound and friends recognise them), counts calls per operation and
// lets a test inject errors or block calls. Its "ciphertext" is only encoded, not encrypted: it is a
// test double, never a key store.
//
// Server behaviour that matters (the wire format, pagination, signatures) is tested against the
// local KMS server in infra/local/kmsapi instead.
package kmsfake
