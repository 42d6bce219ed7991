package reencrypt

import (
	"fmt"

	"github.com/rekey-dev/rekey/shared/retry"
)

// A patch answered 404 NotFound usually means the object was deleted after it was listed: it is
// then gone, and nothing of it is left under the old key. But a 404 can also come from something
// else than the object's absence (a proxy or an aggregation layer routing the request wrongly, an
// API server answering for a resource it does not serve right now). Counting such an object as
// deleted would report it done while it stays under the old key. So a 404 to a patch is checked
// with a fresh GET: not found there either -> Deleted; found -> the patch is tried once more with
// the resourceVersion just read, and a second 404 while the object exists fails the object with a
// reason that says so.

// notFoundResult is what a 404 to a patch leads to: an outcome, or a patch again at rv.
type notFoundResult struct {
	outcome Outcome
	rv      string
}

// notFound handles a 404 answer (patchErr) to a patch of it. again is true when the patch must be
// tried again at res.rv; otherwise res.outcome is the object's outcome. retried says whether this
// object already met a 404 it was patched again after.
func (r *run) notFound(t Target, it item, patchErr error, retried bool) (res notFoundResult, again bool) {
	fresh, err := r.reread(t, it)
	switch retry.Classify(err) {
	case retry.NotFound:
		return notFoundResult{outcome: Deleted}, false
	case retry.OK:
		if !retried {
			r.retries.Add(1)
			r.log.Warn().Str("resource", t.Name).Str("namespace", it.namespace).Str("name", it.name).
				Msg("patch answered NotFound but a fresh GET finds the object; patching it again")
			return notFoundResult{rv: fresh}, true
		}
		return notFoundResult{outcome: r.failed(t, it, fmt.Errorf(
			"patch answered NotFound twice while a fresh GET still finds the object (resourceVersion %s): not counted as deleted, it may still be under the old key: %w",
			fresh, patchErr))}, false
	case retry.Denied:
		r.fail(&PermissionError{Verb: "get", Resource: t.Name, Namespace: it.namespace, Err: err})
		return notFoundResult{outcome: r.failed(t, it, fmt.Errorf("re-read after a NotFound patch: %w", err))}, false
	default:
		if r.ctx.Err() != nil {
			return notFoundResult{outcome: NotAttempted}, false
		}
		return notFoundResult{outcome: r.failed(t, it, fmt.Errorf("patch answered NotFound and the re-read failed, so the object cannot be counted as deleted: %w", err))}, false
	}
}
