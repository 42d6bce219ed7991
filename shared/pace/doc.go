// Package pace keeps rekey polite to a shared API server when the server does not do it for rekey.
// A Limiter bounds the API calls in flight and guards that bound with additive increase and
// multiplicative decrease (AIMD), as TCP does with its congestion window.
//
// It is a guard, not the judge of politeness: on a cluster with rekey's FlowSchema (infra/apf,
// package apf) the API server's own API Priority and Fairness queues rekey's requests whenever
// other clients need the server, and the Limiter starts at the full concurrency and only steps
// back on the server's explicit signals or on latency far above what it measured. Without the
// FlowSchema the caller starts it at a bounded concurrency (package job says which).
//
//   - The first calls run at Options.Initial, the concurrency the caller means to run at, and
//     measure the baseline latency at that concurrency (their median). The baseline then follows
//     the fastest window, but only windows run at least at that concurrency: fewer calls in flight
//     are faster, and holding that as the norm would shrink the limit to one call.
//   - Every window of calls (as many as the limit, at least Options.Window) compares its median
//     latency with Tolerance x baseline: within it the limit grows by one; above it, or when more
//     than a quarter of the window failed with a server error, the limit shrinks by Backoff.
//   - A 429 (or a server timeout) returned to the caller halves the limit at once; a 429 that
//     client-go retried on its own after the Retry-After (Throttle, fed by package apf's transport)
//     halves it once per burst.
//   - Answers to calls started before the last decrease are not counted: they describe the load
//     that decrease already answered.
//
// The limit stays within [Options.Min, Options.Max]. A nil *Limiter admits every call at once, so
// callers need no branch for "not paced" (rekey's --max-speed).
//
// A Limiter is safe for concurrent use. Its clock is injected (k8s.io/utils/clock).
package pace
