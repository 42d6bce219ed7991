// Package job is the one definition of a rotation job: for one cluster and one KMS key, bring every
// Secret (or the resources named) under the key's primary version and prove it. The CLI (`rekey
// run`) and both Function Compute handlers run it; none of them orchestrates anything itself.
//
// Run goes through these steps, each of which may end the job with an Outcome:
//
//  1. KMS guard (Spec.KeyID set): the kms layer of the verifier. A key that cannot serve the API
//     server (Disabled, PendingDeletion, not found, canary failing) is refused: Outcome refused,
//     nothing runs (Spec.Force, the CLI's --force, runs anyway with a warning).
//  2. With Deps.State: the cluster's run Lease (state.Store.TryAcquire). Held by a live holder:
//     Outcome busy, not an error. The Lease is renewed while the job runs; losing it
//     (state.ErrLeaseLost), or the checkpoint (state.ErrCheckpointTaken), stops the job at once.
//  3. Connect: server version, the resources resolved through discovery, and an access check
//     (SelfSubjectAccessReview) of list, get and patch before anything is written.
//  4. Strategy (package storagemode): auto is decided from etcd or /metrics evidence.
//  5. Adoption gate (package adoption): wait until the API servers encrypt with the primary version.
//     Skipped without a key, on a dry run, and when the evidence shows KMS v1 writing the
//     resources (there is no adoption window there).
//  6. Engine pass (package reencrypt), then Judge (storagemode's suspicious rule).
//  7. Verifier (package verify): kms, storage (with Deps.Etcd), convergence, apiserver and audit
//     (with Deps.Trail). The CLI skips it unless asked (Spec.SkipVerify); with Deps.State it
//     always runs.
//
// # Checkpoints, deadlines and resuming (Deps.State set)
//
// A job is checkpointed in its cluster (state.Checkpointer, ConfigMap rekey-checkpoint-<job>): the
// phase (pass or convergence), the resource, namespace, list continue token and the last object
// done in that page, where the next invocation resumes, the counters of the phase so far, and notes (the key version the adoption
// gate proved, and whether that proof was direct; the pass's totals; whether the convergence pass
// completed). The checkpoint is saved at a bounded rate from the engine's Options.OnPage, and
// flushed when the invocation stops.
//
// The job stops taking work Deps.StopMargin before ctx's deadline (the Function Compute
// timeout): patches in flight finish, the checkpoint is flushed, and Run returns Outcome partial.
// The next invocation resumes from the checkpoint; an expired continue token restarts that list
// (rewriting is idempotent: objects already done come back current), skipping what is done.
//
// Guarantee: each invocation that reaches the pass saves its progress, however slow the API
// server. The checkpoint records the position up to which every listed object has an outcome,
// object by object inside a page (reencrypt.Position.After, state.Checkpoint.After), not only at
// page boundaries: an invocation that brought the first object after the checkpoint to an outcome
// moves it, whatever the page size and the time one page takes. An invocation that ran a pass and
// did not move the checkpoint says so (Outcome.NoProgress: the time left too short for one patch,
// or the API server not answering) and counts it in the checkpoint (Outcome.Stalled, invocations
// in a row; the functions send a notice at two).
//
// The verifier's convergence pass is checkpointed the same way (phase convergence), so a job
// finishes under any deadline, however short. Convergence must be one full pass that rewrote
// nothing: when a convergence pass, resumed or not, rewrites an object, it starts again from the
// top. A job is done only when a full pass ended with nothing failed AND the verifier passes; then
// the verified version is recorded (state.Store.Complete) and the checkpoint deleted. A pass that
// ended with failed objects, a suspicious pass, or a failing verifier start the job over on its
// next invocation.
//
// Errors: Run returns an error only for transient or unexpected faults (Function Compute should
// retry the invocation). Everything else is an Outcome: refused, busy, partial, suspicious, or
// failed with Outcome.Err naming the permanent cause (*SpecError, *cluster.AccessError,
// *reencrypt.PermissionError, an adoption gate that gave up) for callers that map it to an exit
// code. Nothing here logs or returns Secret data, key material or credentials.
//
// Panics: Run recovers a panic of the job (failed, reason "panic: ...", Outcome.Err a
// *panics.Error, no error); the Lease renewal and the key watch recover theirs and stop the job
// with it; the engine contains those of its workers (the object fails) and of its lister and
// callbacks (the pass stops, and the job is failed).
package job
