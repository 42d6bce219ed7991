package handler

import (
	"context"
	"errors"
	"fmt"

	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/keyref"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/retry"
)

// base is what both handlers share.
type base struct {
	deps Deps
}

func newBase(d Deps) (base, error) {
	if err := d.validate(); err != nil {
		return base{}, err
	}
	d.defaults()
	return base{deps: d}, nil
}

// transient reports whether err is worth a retry by Function Compute.
func transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	return retry.Classify(err) == retry.Retriable
}

// aliases maps every alias the configuration names, and every alias in refs (the keys events
// name, as alias/<name> or an ARN of an alias), to its key ID (DescribeKey, once per alias per
// invocation), so that policy.Decide compares keys by identity, not by spelling: an event naming a
// key by alias matches a key configured by ID, and the reverse. An alias KMS does not know is left
// out (the policy then matches it by name only) with a note; a transient failure is returned with
// what was resolved.
func (h *base) aliases(ctx context.Context, refs ...keyref.Ref) (map[string]string, []string, error) {
	out := map[string]string{}
	var notes []string
	var faults []error
	resolve := func(alias, ref string) {
		if _, done := out[alias]; done || alias == "" {
			return
		}
		md, err := h.deps.KMS.DescribeKey(ctx, ref)
		if err != nil {
			if transient(err) {
				faults = append(faults, fmt.Errorf("describe key %s: %w", alicloud.Redact(ref), err))
			} else {
				notes = append(notes, fmt.Sprintf("alias %s not resolved: %v", alias, err))
			}
			out[alias] = ""
			return
		}
		out[alias] = md.KeyID
	}
	for _, t := range h.deps.Config.Targets {
		resolve(t.Ref.Alias, t.Key)
	}
	for _, r := range refs {
		resolve(r.Alias, r.Alias)
	}
	for a, id := range out {
		if id == "" {
			delete(out, a)
		}
	}
	return out, notes, errors.Join(faults...)
}

// eventKeyRefs returns the key references of the KMS events (requestParameters.KeyId) and of the
// CS events (kms_key_id) that name an alias.
func eventKeyRefs(evs []events.CloudEvent) []keyref.Ref {
	var out []keyref.Ref
	for _, ev := range evs {
		if ev.Record == nil {
			continue
		}
		raw := events.KMSKeyID(*ev.Record)
		if ev.Source == events.SourceCS {
			raw = events.CSKMSEncryption(*ev.Record).KeyID
		}
		if r, err := keyref.Parse(raw); err == nil && r.Alias != "" {
			out = append(out, r)
		}
	}
	return out
}

// describe returns the metadata of each distinct configured key, and the error of each key that
// could not be described.
func (h *base) describe(ctx context.Context) (map[string]kms.KeyMetadata, map[string]error) {
	md := map[string]kms.KeyMetadata{}
	errs := map[string]error{}
	for _, t := range h.deps.Config.Targets {
		if _, ok := md[t.Key]; ok {
			continue
		}
		if _, ok := errs[t.Key]; ok {
			continue
		}
		m, err := h.deps.KMS.DescribeKey(ctx, t.Key)
		if err != nil {
			errs[t.Key] = fmt.Errorf("describe key %s: %w", alicloud.Redact(t.Key), err)
			continue
		}
		md[t.Key] = m
	}
	return md, errs
}
