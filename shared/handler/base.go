package handler

import (
	"context"
	"errors"
	"fmt"

	"github.com/rekey-dev/rekey/shared/alicloud"
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

// aliases maps every configured alias to its key ID (DescribeKey), so that policy.Decide matches
// an event naming the key by ID to a key configured by alias. An alias KMS does not know is left
// out (the policy then matches it by name only); a transient failure is returned.
func (h *base) aliases(ctx context.Context) (map[string]string, []string, error) {
	out := map[string]string{}
	var notes []string
	for _, t := range h.deps.Config.Targets {
		if t.Ref.Alias == "" {
			continue
		}
		if _, done := out[t.Ref.Alias]; done {
			continue
		}
		md, err := h.deps.KMS.DescribeKey(ctx, t.Key)
		if err != nil {
			if transient(err) {
				return nil, nil, fmt.Errorf("describe key %s: %w", alicloud.Redact(t.Key), err)
			}
			notes = append(notes, fmt.Sprintf("alias %s not resolved: %v", t.Ref.Alias, err))
			continue
		}
		out[t.Ref.Alias] = md.KeyID
	}
	return out, notes, nil
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
