// Package policy decides what an EventBridge event means for rekey: rotate (jobs), alert, recover,
// note or ignore, always with a reason. Decide is a pure function of the event, the configuration and
// a snapshot of rekey's state: it performs no I/O, reads no clock and is safe for concurrent use. The
// caller records the decision (shared/state), sends alerts (shared/notify) and logs it once.
//
// Ignoring is a normal outcome, never an error: an event of another account, an unwatched key, a
// failed call or a duplicate must not make Function Compute retry.
package policy
