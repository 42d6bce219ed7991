// Package state keeps rekey's state inside the cluster it rotates, in the namespace rekey-system:
// nothing outside the cluster is needed, and the state holds no secrets (names, key versions,
// event IDs and counters only; it lives in ConfigMaps, never in Secrets).
//
// Per cluster a [Store] owns three kinds of objects, all named after the cluster ID so that several
// clusters may even share one API server:
//
//   - ConfigMap rekey-state-<cluster>: the last key version fully re-encrypted and verified per key,
//     the pending jobs {cluster, key, version, reason, notBefore}, and the events already handled
//     (bounded by count and age) for deduplication on (source, id). Every change is a
//     read-modify-write guarded by the resourceVersion: a 409 re-reads and tries again, so
//     concurrent writers (EventBridge delivering the same event several times at once) never lose
//     each other's changes, and the same job recorded twice is one job.
//   - ConfigMap rekey-checkpoint-<job ID>: where a job's engine pass or convergence pass stopped
//     (list continue token, counters, phase). A [Checkpointer] writes it at a bounded rate through
//     an optimistic-concurrency update; a second writer gets [ErrCheckpointTaken] instead of
//     clobbering it.
//   - Lease rekey-run-<cluster> (coordination.k8s.io/v1): one run per cluster at a time.
//     [Store.TryAcquire] returns acquired=false when another holder's Lease is still live ("already
//     running", not an error); a Lease its holder stopped renewing can be taken over once it has
//     expired by the injected clock.
//
// A [Fleet] routes a policy decision to the stores of the clusters it concerns and merges their
// snapshots into the policy.State that policy.Decide reads.
//
// Transient API errors are retried through package retry; a missing permission is reported with
// the verb, resource and namespace the identity lacks (infra/rbac/rekey-function.yaml grants
// exactly what this package uses).
package state
