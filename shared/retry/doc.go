// Package retry is rekey's one error classifier and retry loop for calls to remote services.
//
// Every remote call (Kubernetes API, KMS, ActionTrail) goes through [Classify] to decide whether an
// error is worth another try, and through [Do] to try again with exponential backoff and jitter,
// honouring a server's Retry-After hint, bounded by attempts and by the caller's context.
package retry
