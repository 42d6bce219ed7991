// Package events decodes what Function Compute hands rekey's functions: EventBridge CloudEvents 1.0
// (one object, an array of objects, or an array of JSON-encoded objects), the ActionTrail records they
// carry for acs.kms and acs.cs, and timer trigger payloads. It decides nothing (that is shared/policy)
// and performs no I/O.
//
// One file per source, as aws-lambda-go's events package does: cloudevent.go (the envelope),
// actiontrail.go (ActionTrail records in an envelope's data), kms.go (acs.kms), cs.go (acs.cs),
// timer.go (FC timer), decode.go (the single entry point, Decode). Fixtures live in
// testdata/<source>-<variant>.json.
//
// ActionTrail records are decoded into shared/actiontrail's Event, the same type the verifier's
// LookupEvents returns: the EventBridge data and a LookupEvents entry are the same record.
package events
