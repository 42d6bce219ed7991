// Package evidence keeps the record of each rotation job's outcome: what an auditor asks for ("when
// was the key rotated, and when was every Secret re-encrypted under the new version: show me"),
// and what `rekey status` and `rekey history` read.
//
// A [Record] is written once per job outcome that matters (done, suspicious, failed, refused; a
// partial outcome only when it ends an off-peak window) into the cluster it concerns, as an
// immutable ConfigMap in rekey-system (state.Store.AddEvidence): it cannot be changed once written
// (the API server refuses an update), and the newest state.DefaultEvidenceKeep per cluster are kept,
// older ones deleted. It
// holds names, versions, counts, times and verdicts only: never Secret data, key material or
// credentials.
//
// Its retirement statement says what stays behind even after a verified re-encryption: old
// ciphertext remains in etcd's MVCC history until compaction and in every etcd backup taken before
// the job, so the old key version is still needed to restore those backups.
//
// Each record is also one structured log line with stable field names ([LogFields]), for Log
// Service (SLS) indexes and alerts (infra/sls). [WriteMarkdown] and [WriteCSV] render records for
// an auditor (`rekey history`).
package evidence
