// Package reencrypt rewrites Kubernetes objects so the API server stores them again under its
// current encryption key, without ever reading their data.
//
// An [Engine] lists objects with the metadata client (PartialObjectMetadata pages), feeds their
// namespace/name/resourceVersion through a bounded channel to a fixed pool of workers, and each
// worker sends one small JSON merge patch:
//
//   - [Rewrite] sends {"metadata":{"resourceVersion":RV}}. The API server writes the object only if
//     its stored value is stale (read through a provider or key that is no longer the write key), so
//     a changed resourceVersion in the response proves the object was rewritten, and an unchanged
//     one proves it was already current. The resourceVersion is a precondition: a concurrent change
//     is never overwritten (409 Conflict: the worker re-reads the metadata and tries again).
//   - [Annotate] sets the encryption-key-rotation-time annotation, forcing a write. It is for
//     KMS v1 clusters, where values carry no key ID and a no-op write rewrites nothing.
//
// Outcomes are counted per resource in a [Summary]. Transient API errors are retried with backoff
// (package retry); missing permissions (RBAC) stop the run at once, while a denial by an admission
// webhook or policy fails only the object it names. A run that stops early is not Complete, and
// the objects it listed but left without an outcome are counted NotAttempted, never failed or
// done. A patch whose answer was lost but which was applied is counted Rewritten (see process).
// Continue tokens that expire with etcd compaction are followed or, failing that, the list starts
// again from the top and skips what it already handed on, so no object is counted twice.
//
// A run reports where a later run may resume (Options.OnPage) object by object: the [Position] up
// to which every listed object has an outcome, inside a page (the page's continue token and the
// key of the last object done) as well as at page boundaries. So a run that stops before the end
// of a page, however long one page takes, still leaves a position past every object it finished
// in list order; a resumed run lists that page again and skips the objects up to the position.
//
// A patch answered 404 counts Deleted only when a fresh GET agrees; an object the GET still finds
// is patched once more, then failed with a reason that says so (notfound.go). No goroutine of a
// run can take the process down: a panic while processing an object fails that object ("panic:
// ..."), a panic in the lister or in a caller's callback stops the run with the error, and
// Summary.Panics counts them (panics.go).
package reencrypt
