// Package apimetrics reads the KMS v2 key-ID series of a kube-apiserver's /metrics endpoint
// (k8s.io/apiserver v0.37.2, pkg/storage/value/encrypt/envelope/metrics):
//
//	apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{provider_name,key_id_hash,apiserver_id_hash}
//	apiserver_envelope_encryption_key_id_hash_last_timestamp_seconds{transformation_type,provider_name,key_id_hash,apiserver_id_hash}
//
// The first is set to the current time each time the API server's KMS plugin Status call returns a
// key ID; the second each time a value is read (from_storage) or written (to_storage) with a key
// ID. key_id_hash and apiserver_id_hash are "sha256:<64 hex>" of the key ID and of the API server's
// identity ([HashKeyID]). Every API server exposes only its own series, so a scrape through a load
// balancer sees one replica; [Snapshot.Replicas] reduces one scrape to the key each replica
// currently uses.
//
// The package never sees key material: key IDs are compared by hash only. Its functions are safe
// for concurrent use.
package apimetrics
