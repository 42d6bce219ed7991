// Package pace keeps rekey polite to a shared API server: a Limiter bounds the API calls in flight
// and adapts that bound to how the server answers, with additive increase and multiplicative
// decrease (AIMD), as TCP does with its congestion window.
//
//   - The first calls run at a low limit and measure the baseline latency of an unloaded server
//     (their median). The baseline then only moves down, to the lowest window median seen.
//   - Every window of answered calls (as many as the limit, at least Options.Window) compares its
//     median latency with Tolerance x baseline: within it the limit grows by one; above it the
//     limit shrinks by the factor Backoff. A queueing server answers more slowly before it refuses
//     anything, so the limit settles where the server still has headroom for other clients.
//   - A 429 (or a server timeout) halves the limit at once.
//   - Answers to calls started before the last decrease are not counted: they describe the load
//     that decrease already answered.
//
// The limit stays within [Options.Min, Options.Max]. A nil *Limiter admits every call at once, so
// callers need no branch for "not paced" (rekey's --max-speed).
//
// A Limiter is safe for concurrent use. Its clock is injected (k8s.io/utils/clock).
package pace
