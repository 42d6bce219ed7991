package verify

import (
	"bytes"
	"context"
	"slices"
	"time"

	"github.com/rekey-dev/rekey/shared/kms"
)

// describeKey reads the key's metadata; callers say which key failed.
func describeKey(ctx context.Context, c kms.Client, keyID string) (*KeyFacts, error) {
	m, err := c.DescribeKey(ctx, keyID)
	if err != nil {
		return nil, err
	}
	return &KeyFacts{KeyID: m.KeyID, State: m.State, PrimaryKeyVersion: m.PrimaryKeyVersion, AutomaticRotation: m.AutomaticRotation,
		RotationInterval: m.RotationInterval, LastRotationDate: m.LastRotationDate, NextRotationDate: m.NextRotationDate, DeleteDate: m.DeleteDate}, nil
}

// CheckKey runs the kms layer alone: `rekey run` uses it to refuse to start on a key that cannot
// serve the API server. facts is nil when the key could not be described.
func CheckKey(ctx context.Context, c kms.Client, keyID string) (LayerResult, *KeyFacts) {
	l := LayerResult{Name: LayerKMS}
	f, err := describeKey(ctx, c, keyID)
	if err != nil {
		if kms.IsKeyNotFound(err) {
			l.add(Fail, "key %s does not exist in this region and account: %v", keyID, err)
		} else {
			l.failOrUnknown(err, "cannot describe key %s: %v", keyID, err)
		}
		return l, nil
	}
	switch f.State {
	case kms.KeyStateEnabled:
		l.add(Pass, "key %s is Enabled; primary version %s", f.KeyID, f.PrimaryKeyVersion)
	case kms.KeyStatePendingDeletion:
		l.add(Fail, "key %s is PendingDeletion (deleted on %s): the API server cannot encrypt or decrypt Secrets with it, so reading Secrets and ServiceAccounts fails; run CancelKeyDeletion now",
			f.KeyID, f.DeleteDate.UTC().Format(time.RFC3339))
	default:
		l.add(Fail, "key %s is %s: the API server cannot encrypt or decrypt Secrets with it, so reading Secrets and ServiceAccounts fails; run EnableKey", f.KeyID, f.State)
	}
	if versions, err := c.ListKeyVersions(ctx, keyID); err != nil {
		l.add(Warn, "cannot list key versions: %v", err)
	} else {
		for _, v := range versions {
			f.Versions = append(f.Versions, v.KeyVersionID)
		}
		if !slices.Contains(f.Versions, f.PrimaryKeyVersion) {
			l.add(Fail, "primary version %s is not among the key's %d versions", f.PrimaryKeyVersion, len(f.Versions))
		}
	}
	if f.AutomaticRotation == "Enabled" {
		l.add(Pass, "automatic rotation every %s; next %s", f.RotationInterval, f.NextRotationDate.UTC().Format(time.RFC3339))
	} else {
		rotation := f.AutomaticRotation
		if rotation == "" {
			rotation = "unknown"
		}
		l.add(Pass, "automatic rotation is %s (rotate with CreateKeyVersion; rekey re-encrypts after either)", rotation)
	}
	if f.State == kms.KeyStateEnabled {
		canary(ctx, c, keyID, f.PrimaryKeyVersion, &l)
	}
	return l, f
}

// canary proves the key works end to end under its primary version, the way a KMS plugin uses it.
func canary(ctx context.Context, c kms.Client, keyID, primary string, l *LayerResult) {
	dk, err := c.GenerateDataKey(ctx, keyID)
	if err != nil {
		l.failOrUnknown(err, "canary GenerateDataKey failed: %v", err)
		return
	}
	defer clear(dk.Plaintext)
	pt, err := c.Decrypt(ctx, dk.CiphertextBlob, nil)
	if err != nil {
		l.failOrUnknown(err, "canary Decrypt failed: %v", err)
		return
	}
	defer clear(pt.Plaintext)
	switch {
	case !bytes.Equal(pt.Plaintext, dk.Plaintext):
		l.add(Fail, "canary Decrypt returned a different data key")
	case dk.KeyVersionID != primary || pt.KeyVersionID != primary:
		l.add(Fail, "canary used version %s (decrypt reported %s), not the primary %s", dk.KeyVersionID, pt.KeyVersionID, primary)
	default:
		l.add(Pass, "canary GenerateDataKey -> Decrypt round trip under the primary version")
	}
}
