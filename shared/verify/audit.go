package verify

import (
	"context"
	"strings"
	"time"

	"github.com/rekey-dev/rekey/shared/actiontrail"
)

// noEventsExplained says why a healthy cluster can leave no event in the window.
const noEventsExplained = "not a failure on its own: ActionTrail delivers events a few minutes after the call; " +
	"a trail may not record read events, and Encrypt, Decrypt and GenerateDataKey are reads; " +
	"a KMS v2 API server calls KMS only to wrap a new DEK seed (after a rotation or a restart) and to unwrap one it has not cached, " +
	"so a quiet cluster may not have used the key since; if encryption at rest is off, the storage layer shows identity values"

// auditCaller matches the identity the cluster's KMS calls are recorded under.
type auditCaller struct {
	role, user string
}

func (a auditCaller) String() string {
	if a.user != "" {
		return "RAM user " + a.user
	}
	return "role " + a.role
}

func (a auditCaller) matches(i actiontrail.Identity) bool {
	if a.user != "" {
		return strings.EqualFold(i.RAMUserName(), a.user)
	}
	return strings.EqualFold(i.RoleName(), a.role)
}

// checkAudit looks in ActionTrail for successful Encrypt/Decrypt/GenerateDataKey calls on the key
// by the cluster's identity since the rotation. It passes when the identity wrapped a key under
// the primary version; an empty window is a warning, never a failure: ActionTrail's delivery
// delay and a quiet cluster both leave one.
func checkAudit(ctx context.Context, in Inputs, key *KeyFacts) (LayerResult, *AuditFacts) {
	l := LayerResult{Name: LayerAudit}
	who := auditCaller{role: in.AuditRole, user: in.AuditUser}
	if who.user == "" && who.role == "" {
		who.role = DefaultAuditRole
	}
	now := in.Clock.Now()
	since, from := in.AuditSince, "the given start"
	if since.IsZero() && !key.LastRotationDate.IsZero() {
		since, from = key.LastRotationDate, "the key's last rotation"
	}
	if since.IsZero() {
		since, from = now.Add(-24*time.Hour), "the last 24 hours (the key reports no rotation date)"
	}
	start, clamped := actiontrail.ClampStart(since, now)
	facts := &AuditFacts{Identity: who.String(), Since: start, Until: now, Clamped: clamped, Calls: map[string]int{}}
	if clamped {
		l.add(Pass, "window clamped: %s is %s, more than 90 days ago; ActionTrail LookupEvents searches the last 90 days only, so the window starts at %s",
			from, rfc3339(since), rfc3339(start))
	}
	keyID := key.KeyID
	if keyID == "" {
		keyID = in.KeyID
	}
	res, err := in.Trail.LookupEvents(ctx, actiontrail.Query{Start: start, End: now, ResourceName: keyID})
	facts.Events, facts.Pages, facts.Truncated = len(res.Events), res.Pages, res.Truncated
	if err != nil {
		l.failOrUnknown(err, "ActionTrail LookupEvents: %v (the audit layer needs actiontrail:LookupEvents; leave the layer out if it cannot have it)", err)
		return l, facts
	}
	if res.Truncated {
		l.add(Pass, "truncated after %d events (%d pages): ActionTrail holds more in the window; the counts below cover the newest %d", len(res.Events), res.Pages, len(res.Events))
	}
	usedPrimary := false
	for _, e := range res.Events {
		switch e.EventName {
		case "Encrypt", "Decrypt", "GenerateDataKey":
		default:
			continue
		}
		if e.Failed() {
			continue
		}
		if !who.matches(e.UserIdentity) {
			facts.OtherCallers++
			continue
		}
		v := e.Response("KeyVersionId")
		facts.Calls[e.EventName+" "+v]++
		if e.EventName != "Decrypt" && v == key.PrimaryKeyVersion {
			usedPrimary = true
			if e.EventID != "" && len(facts.EventIDs) < MaxAuditEventIDs {
				facts.EventIDs = append(facts.EventIDs, e.EventID)
			}
		}
	}
	window := rfc3339(start) + " to " + rfc3339(now)
	switch {
	case len(facts.Calls) == 0:
		l.add(Warn, "no event in the window: ActionTrail shows no successful Encrypt/Decrypt/GenerateDataKey on key %s by %s from %s (%d other callers); %s",
			keyID, who, window, facts.OtherCallers, noEventsExplained)
	case !usedPrimary:
		l.add(Warn, "%s used key %s from %s (%s) but wrapped nothing under the primary version %s: either the API server has not picked up the rotation, or it has not needed a new DEK since (events arrive minutes late)",
			who, keyID, window, joinCounts(facts.Calls, " x"), key.PrimaryKeyVersion)
	default:
		l.add(Pass, "%s used key %s from %s: %s", who, keyID, window, joinCounts(facts.Calls, " x"))
	}
	return l, facts
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }
