// Package eventbridge is the local twin of Alibaba Cloud EventBridge (default
// bus, event-driven mode) and of Function Compute timer triggers.
//
//   - ParsePattern compiles an event pattern exactly as an s.yaml trigger's
//     eventRuleFilterPattern writes it, with the operators Alibaba documents
//     (exact, prefix, suffix, contains, anything-but, numeric, cidr, exists,
//     "" and null); Pattern.Match evaluates it against a JSON event.
//   - Router holds rules (pattern -> Target) and timers. Publish completes a
//     CloudEvent's EventBridge attributes and delivers it, one event per
//     delivery, to every rule whose pattern matches; Fire delivers the
//     Function Compute timer payload of a timer on demand. A Router is also an
//     http.Handler accepting CloudEvents by POST.
//   - KMSBridge turns the KMS stand-in's ActionTrail records
//     (infra/local/kmsapi) into acs.kms CloudEvents and publishes the
//     write-type ones, as EventBridge does for real KMS.
//
// Targets are plain functions, so a rule can invoke a function binary through
// infra/local/fc, post to a URL (URLTarget) or record what it got in a test.
package eventbridge
