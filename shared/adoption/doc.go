// Package adoption establishes that the API servers encrypt with a KMS key's primary version
// before a rewrite pass runs.
//
// # The problem
//
// After a KMS key rotates, each kube-apiserver keeps encrypting under the old key version until its
// KMS v2 Status poll returns the new key ID (about every 60 s per replica when healthy, and a DEK
// made from a key ID may be used for writes for up to 3 min). A rewrite pass that runs inside that
// window finds every object "current" (the no-op patch writes only values stored under a key other
// than the serving replica's current one) and exits 0 having re-encrypted nothing. [Gate.Wait]
// blocks until the best evidence available shows every replica on the primary version, or fails
// after a timeout with an error that names the version and the evidence tried ([NotAdoptedError]).
//
// # Evidence, best first ([Auto] tries them in this order)
//
// [Etcd]: etcd is readable (self-managed clusters). The gate writes a canary Secret
// ([EtcdCanaryName] in [DefaultNamespace]) through the API server with a real change (a fresh
// annotation value), reads the value the API server stored from etcd, checks that etcd's
// modification revision is the resourceVersion the write returned (the value is that write's), and
// classifies it ([storedvalue.Classify]): the KMS v2 EncryptedObject's keyID must be the primary
// version. It requires Confirmations consecutive writes under the primary; any write under another
// key starts the count again. With N replicas behind a load balancer each write lands on one of them,
// so K consecutive writes under the primary miss a lagging replica with probability about
// (1-1/N)^K; give the gate clients that open a new connection per request ([FreshConnections]) so
// that the writes are spread at all.
//
// [Metrics]: /metrics is readable. Each API server exposes, per KMS provider, the hash of every key
// ID its Status call returned with the time it last did
// (apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds, see
// [apimetrics]); the most recent one is the key it uses now. A scrape through a load balancer sees
// one replica. The gate requires Confirmations consecutive scrapes in which every replica seen
// reports the adopted key as its most recent Status key (and wrote with no other key after that
// Status call), and every replica seen during the wait must be on it in its latest scrape. The
// adopted key is sha256(primary) when the KMS plugin's key_id is the version ID (rekey's plugin).
// A plugin may use another key_id format (ACK's is not documented): then no series ever equals
// sha256(primary), and a replica counts as adopted when its key-ID hash moved to a new value, away
// from the hash recorded for the previous version ([KeyIDHashAnnotation] on the ledger, or
// Gate.PreviousKeyIDHash), from a hash the gate saw it on, or from a hash its Status reported after
// the rotation; every replica must have moved, to the same hash. A replica that never moves is
// named when the gate times out. When nothing in the series can prove anything (no recorded hash
// and no replica seen moving within Gate.MetricsGiveUp, or a baseline job), the gate goes on to the
// next kind and says why. Whatever the kind, the hash every replica reports once the version is
// adopted is recorded on the ledger for the next rotation.
//
// [Canary]: effect-based canaries, when neither etcd nor /metrics is available (managed clusters).
// A few small Secrets in [DefaultNamespace] labelled [CanaryLabel]=[EffectCanary] carry the key
// version they are known to be stored under ([ProvedVersionAnnotation]); a ledger Secret
// ([LedgerName]) records the resourceVersion each canary had when that was recorded. The API
// server's GuaranteedUpdate skips a write that changes nothing unless the stored value is stale,
// that is, stored under a key other than the serving replica's current key. So a no-op merge patch
// (the engine's rewrite patch, {"metadata":{"resourceVersion":RV}}) that changes a canary's
// resourceVersion proves the serving replica's current key differs from the key the canary was
// stored under (and the canary is now stored under the replica's key); one that changes nothing
// proves they are the same.
//
// The reasoning that turns these facts into proof of the primary P:
//
//   - A canary is usable only if its recorded version is P or P's predecessor Q (the version that was
//     primary just before P, [Gate.Predecessor]) and its resourceVersion still equals the ledger's:
//     nothing wrote it since it was recorded, so it is still stored under the recorded version. A
//     canary created fresh, one written since (for example by a run without the gate), or one
//     recorded under an older version cannot prove anything: when no canary is usable the gate
//     falls through to the next kind.
//   - When Q was recorded, every replica was on Q, and the only version created after Q is P, so
//     every replica is now on Q or P. A change of a canary stored under Q was made by a replica on P
//     and leaves the canary under P; a change of a canary stored under P was made by a replica
//     still on Q and leaves it under Q. The gate tracks this per canary.
//   - Replicas on different versions make a canary flip-flop: each change only shows that the
//     serving replica disagreed with the last writer. Adoption is proved by Confirmations consecutive
//     no-op patches, spread over the canaries, that change nothing while the canary is stored under
//     P: each shows its serving replica on P, and any change (a replica still on Q) starts the count
//     again. A re-run after a completed rotation (canaries recorded under P) passes at once.
//
// After adoption is established by any kind, the gate records it: it creates any missing canary,
// writes [ProvedVersionAnnotation]=P (with [ProvedByAnnotation] and [ProvedAtAnnotation]) on each,
// a real write that stores it under the serving replica's key, checks with Confirmations no-op
// patches that no replica disagrees (a change means the replicas still disagree: the gate waits
// and records again), and then writes the ledger. The canaries created now prove the next
// rotation.
//
// [Settle]: only when none of the above is possible, wait until Settle has passed since the
// rotation ([Gate.RotatedAt], else since the gate started). Upstream advises 3 + N + M minutes
// (the 3 min DEK write lifetime, N the Status poll period, M >= 5 of margin); the default is
// [DefaultSettle].
//
// The gate never sleeps a fixed time: it polls with an injected clock, a short interval after a
// confirming sample and an exponential backoff after one that is not, and may nudge the API
// servers between samples ([Gate.Nudge], e.g. [ReadyzNudge]: /readyz runs the KMS health check,
// which calls Status, as an operator's readiness probe would) without relying on it.
//
// Limits: the canary reasoning assumes exactly one rotation since the canaries were recorded (the
// gate checks this through Predecessor) and that no one else writes the canaries; a rotation during
// the wait makes the gate prove a version that is no longer primary, which the next gated run
// catches. Key IDs are compared in full but logged and reported hashed where they are not version
// IDs already shown by KMS. No Secret data is read: canaries have none.
package adoption
