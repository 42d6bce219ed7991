// Package etcdscan reads every value under an etcd prefix (such as "/registry/secrets/") and
// counts how each is encrypted, to prove from etcd itself that a re-encryption pass left nothing
// behind.
//
// [Scan] pages through the prefix pinned to one etcd revision, classifies each value with
// storedvalue.Classify, and returns a [Report] that holds counts and object names, never value
// bytes. It only reads; it needs no API server and decrypts nothing. [ResourcePrefix] says where
// the API server stores a resource ("deployments.apps" under "/registry/deployments/"), and
// [Count] counts keys without reading values, to tell an empty prefix's causes apart.
package etcdscan
