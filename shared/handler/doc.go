// Package handler is the logic behind rekey's two Function Compute functions; their main.go files
// only load the configuration, build Deps and hand a handler to fc.Start.
//
//   - Rotation.Handle (functions/rotation, EventBridge trigger): payload -> events.Decode -> for
//     each event policy.Decide on a snapshot of the watched clusters' state -> state record ->
//     the notice (alert, recovery) when this delivery recorded the event first -> one log line per
//     decision with the FC request id -> a JSON result. With REKEY_RUN_MODE=immediate it then runs
//     the jobs whose notBefore has passed.
//   - OffPeak.Handle (functions/offpeak, timer trigger): on every tick it compares each watched
//     key's PrimaryKeyVersion (DescribeKey) with the version last verified on each cluster and
//     records a job when it moved (automatic rotation emits no event); inside REKEY_WINDOW, judged
//     by the tick's triggerTime, it runs due jobs one cluster at a time whose Lease is free, until
//     a margin before its deadline, and returns a summary per cluster.
//
// What Function Compute retries: an invocation that returns an error (POST .../error on the
// runtime API) is a failed invocation, which FC retries for asynchronous invocations (EventBridge
// triggers with asyncInvocationType, timers) up to asyncInvokeConfig.maxAsyncRetryAttempts; a
// result is a success and is never retried. So malformed input (events.DecodeError), input meant
// for the other function and ignored events are results (with "error" or "ignored" set), while
// transient faults (an API server, KMS or CS unreachable, a webhook answering 5xx) are errors.
// A notice that could not be delivered for a transient reason is forgotten from the handled
// events before the error is returned, so that the retry decides and sends it again.
//
// Jobs run through RunJob (shared/job's Run in production: KMS guard, adoption gate, engine pass,
// verifier, each checkpointed; it takes the cluster's Lease and reports busy when another
// invocation holds it).
//
// A critical KMS alert (DisableKey, ScheduleKeyDeletion, DeleteKeyMaterial) carries, per cluster at
// risk, the Secrets that depend on the key (Notice.DependentObjects, also in its Impact): a bounded
// count from the API server and what the state knows of older versions (dependents.go). A panic
// while working on one cluster (or checking one key's version) is that cluster's error; the
// others still run.
package handler
