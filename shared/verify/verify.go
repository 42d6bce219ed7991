package verify

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/shared/actiontrail"
	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// DefaultAuditRole is the RAM role ACK's control plane assumes to call KMS for Secret encryption.
const DefaultAuditRole = "aliyuncsmanagedsecurityrole"

// Inputs say what to verify and how to reach it. Every layer whose inputs are nil is skipped.
type Inputs struct {
	// KMS and KeyID enable the kms layer (and give the storage and audit layers the primary version).
	KMS   kms.Client
	KeyID string

	// Etcd enables the storage layer over Resources (default "secrets").
	Etcd      clientv3.KV
	Resources []string
	// ExpectKeyID is the KMS v2 keyID values must carry when no KMS key is given.
	ExpectKeyID string

	// Convergence enables the convergence layer: it runs this engine (strategy rewrite).
	Convergence *reencrypt.Engine

	// APIServer enables the apiserver layer (a REST client of the cluster).
	APIServer rest.Interface

	// Trail enables the audit layer. AuditRole is the identity expected to use the key (default
	// DefaultAuditRole); AuditSince defaults to the key's last rotation.
	Trail      actiontrail.Lookuper
	AuditRole  string
	AuditSince time.Time

	// MaxNames bounds the object names listed per layer (default 20).
	MaxNames int
	// Clock returns the current time (default time.Now).
	Clock func() time.Time
}

// Verify runs every layer whose inputs are given. It returns an error only when ctx ends; every
// other problem is a layer result.
func Verify(ctx context.Context, in Inputs) (Report, error) {
	if in.Clock == nil {
		in.Clock = time.Now
	}
	if in.MaxNames <= 0 {
		in.MaxNames = 20
	}
	r := Report{CheckedAt: in.Clock()}
	primary := in.ExpectKeyID
	if in.KMS != nil && in.KeyID != "" {
		l, facts := CheckKey(ctx, in.KMS, in.KeyID)
		r.Layers = append(r.Layers, l)
		r.Key = facts
		if facts != nil && facts.PrimaryKeyVersion != "" {
			primary = facts.PrimaryKeyVersion
		}
	}
	if in.Etcd != nil {
		l, scans := checkStorage(ctx, in, primary)
		r.Layers = append(r.Layers, l)
		r.Storage = scans
	}
	if in.Convergence != nil {
		l, s := checkConvergence(ctx, in.Convergence, in.MaxNames)
		r.Layers = append(r.Layers, l)
		r.Convergence = s
	}
	if in.APIServer != nil {
		r.Layers = append(r.Layers, checkAPIServer(ctx, in.APIServer))
	}
	if in.Trail != nil && in.KeyID != "" {
		l, facts := checkAudit(ctx, in, r.Key)
		r.Layers = append(r.Layers, l)
		r.Audit = facts
	}
	r.finish()
	if err := ctx.Err(); err != nil {
		return r, fmt.Errorf("verify: %w", err)
	}
	return r, nil
}

// CheckKey runs the kms layer alone: `rekey run` uses it to refuse to start on a key that cannot
// serve the API server. facts is nil when the key could not be described.
func CheckKey(ctx context.Context, c kms.Client, keyID string) (LayerResult, *KeyFacts) {
	l := LayerResult{Name: LayerKMS}
	m, err := c.DescribeKey(ctx, keyID)
	if err != nil {
		if kms.IsKeyNotFound(err) {
			l.add(Fail, "key %s does not exist in this region and account: %v", keyID, err)
		} else {
			l.add(Fail, "cannot describe key %s: %v", keyID, err)
		}
		return l, nil
	}
	f := &KeyFacts{KeyID: m.KeyID, State: m.State, PrimaryKeyVersion: m.PrimaryKeyVersion, AutomaticRotation: m.AutomaticRotation,
		RotationInterval: m.RotationInterval, LastRotationDate: m.LastRotationDate, NextRotationDate: m.NextRotationDate, DeleteDate: m.DeleteDate}
	switch m.State {
	case kms.KeyStateEnabled:
		l.add(Pass, "key %s is Enabled; primary version %s", m.KeyID, m.PrimaryKeyVersion)
	case kms.KeyStatePendingDeletion:
		l.add(Fail, "key %s is PendingDeletion (deleted on %s): the API server cannot encrypt or decrypt Secrets with it, so reading Secrets and ServiceAccounts fails; run CancelKeyDeletion now",
			m.KeyID, m.DeleteDate.UTC().Format(time.RFC3339))
	default:
		l.add(Fail, "key %s is %s: the API server cannot encrypt or decrypt Secrets with it, so reading Secrets and ServiceAccounts fails; run EnableKey", m.KeyID, m.State)
	}
	if versions, err := c.ListKeyVersions(ctx, keyID); err != nil {
		l.add(Warn, "cannot list key versions: %v", err)
	} else {
		for _, v := range versions {
			f.Versions = append(f.Versions, v.KeyVersionID)
		}
		if !slices.Contains(f.Versions, m.PrimaryKeyVersion) {
			l.add(Fail, "primary version %s is not among the key's %d versions", m.PrimaryKeyVersion, len(f.Versions))
		}
	}
	if m.AutomaticRotation == "Enabled" {
		l.add(Pass, "automatic rotation every %s; next %s", m.RotationInterval, m.NextRotationDate.UTC().Format(time.RFC3339))
	} else {
		l.add(Pass, "automatic rotation is %s (rotate with CreateKeyVersion; rekey re-encrypts after either)", orUnknown(m.AutomaticRotation))
	}
	if m.State == kms.KeyStateEnabled {
		canary(ctx, c, keyID, m.PrimaryKeyVersion, &l)
	}
	return l, f
}

// canary proves the key works end to end under its primary version, the way a KMS plugin uses it.
func canary(ctx context.Context, c kms.Client, keyID, primary string, l *LayerResult) {
	dk, err := c.GenerateDataKey(ctx, keyID)
	if err != nil {
		l.add(Fail, "canary GenerateDataKey failed: %v", err)
		return
	}
	defer clear(dk.Plaintext)
	pt, err := c.Decrypt(ctx, dk.CiphertextBlob, nil)
	if err != nil {
		l.add(Fail, "canary Decrypt failed: %v", err)
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

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func checkStorage(ctx context.Context, in Inputs, keyID string) (LayerResult, []etcdscan.Report) {
	l := LayerResult{Name: LayerStorage}
	resources := in.Resources
	if len(resources) == 0 {
		resources = []string{"secrets"}
	}
	if keyID == "" {
		l.add(Warn, "no KMS key or expected key ID given: counting classes only")
	}
	want := func(v storedvalue.Value) bool { return v.Provider == storedvalue.KMSv2 && v.KeyID == keyID }
	var scans []etcdscan.Report
	for _, res := range resources {
		rep, err := etcdscan.Scan(ctx, in.Etcd, "/registry/"+res+"/", want, etcdscan.Options{MaxNames: in.MaxNames})
		if err != nil {
			l.add(Fail, "scan %s in etcd: %v", res, err)
			continue
		}
		scans = append(scans, rep)
		l.add(Pass, "%s: %d values at etcd revision %d: %s", res, rep.Total, rep.Revision, classes(rep.ByClass))
		if len(rep.ByDEKSource) > 0 {
			l.add(Pass, "%s: KMS v2 DEK source types: %s", res, classes(rep.ByDEKSource))
		}
		if keyID == "" {
			continue
		}
		if n := rep.Stale(); n > 0 {
			l.add(Fail, "%s: %d of %d values are not under key version %s (stale), e.g. %s", res, n, rep.Total, keyID, strings.Join(rep.Offenders, ", "))
		} else {
			l.add(Pass, "%s: every value is a KMS v2 EncryptedObject under key version %s", res, keyID)
		}
		if rep.Unreadable > 0 {
			l.add(Fail, "%s: %d values could not be classified", res, rep.Unreadable)
		}
		if n := rep.ByClass[string(storedvalue.Identity)]; n > 0 {
			l.add(Fail, "%s: %d values are stored unencrypted (identity)", res, n)
		}
	}
	return l, scans
}

func classes(counts map[string]int) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, counts[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func checkConvergence(ctx context.Context, e *reencrypt.Engine, maxNames int) (LayerResult, *reencrypt.Summary) {
	l := LayerResult{Name: LayerConvergence}
	s, err := e.Run(ctx)
	if err != nil {
		l.add(Fail, "rewrite pass did not finish: %v", err)
		return l, &s
	}
	switch {
	case s.Total.Failed > 0:
		l.add(Fail, "rewrite pass: %d objects failed (%s)", s.Total.Failed, failures(s, maxNames))
	case s.Total.Rewritten > 0:
		l.add(Fail, "rewrite pass: %d of %d objects were stale and have now been rewritten; run verify again to prove convergence", s.Total.Rewritten, s.Total.Listed)
	default:
		l.add(Pass, "rewrite pass: 0 of %d objects changed resourceVersion: none was stale on the API servers that served the pass", s.Total.Listed)
	}
	return l, &s
}

func failures(s reencrypt.Summary, maxNames int) string {
	var names []string
	for i, f := range s.Failures {
		if i == maxNames {
			break
		}
		names = append(names, f.Namespace+"/"+f.Name)
	}
	return strings.Join(names, ", ")
}

func checkAPIServer(ctx context.Context, c rest.Interface) LayerResult {
	l := LayerResult{Name: LayerAPIServer}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	body, err := c.Get().AbsPath("/readyz/kms-providers").Param("verbose", "true").DoRaw(ctx)
	if err != nil {
		l.add(Fail, "/readyz/kms-providers: %v %s", err, strings.TrimSpace(string(body)))
		return l
	}
	l.add(Pass, "/readyz/kms-providers: %s", lastLine(string(body)))
	return l
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func checkAudit(ctx context.Context, in Inputs, key *KeyFacts) (LayerResult, *AuditFacts) {
	l := LayerResult{Name: LayerAudit}
	role := in.AuditRole
	if role == "" {
		role = DefaultAuditRole
	}
	since := in.AuditSince
	if since.IsZero() && key != nil {
		since = key.LastRotationDate
	}
	if since.IsZero() {
		since = in.Clock().Add(-24 * time.Hour)
	}
	facts := &AuditFacts{Since: since, Calls: map[string]int{}}
	keyID := in.KeyID
	if key != nil && key.KeyID != "" {
		keyID = key.KeyID
	}
	events, err := in.Trail.LookupEvents(ctx, actiontrail.Query{Start: since, End: in.Clock(), ResourceName: keyID})
	if err != nil {
		l.add(Fail, "ActionTrail LookupEvents: %v", err)
		return l, facts
	}
	usedPrimary := false
	for _, e := range events {
		switch e.EventName {
		case "Encrypt", "Decrypt", "GenerateDataKey":
		default:
			continue
		}
		if e.Failed() {
			continue
		}
		if !strings.EqualFold(e.UserIdentity.RoleName(), role) {
			facts.OtherCallers++
			continue
		}
		v := e.Response("KeyVersionId")
		facts.Calls[e.EventName+" "+v]++
		if e.EventName == "Encrypt" && key != nil && v == key.PrimaryKeyVersion {
			usedPrimary = true
		}
	}
	switch {
	case len(facts.Calls) == 0:
		l.add(Fail, "no evidence: ActionTrail shows no Encrypt/Decrypt/GenerateDataKey call on key %s by role %s since %s; is encryption at rest enabled for this cluster?",
			keyID, role, since.UTC().Format(time.RFC3339))
	case key != nil && !usedPrimary:
		l.add(Fail, "role %s used key %s since %s, but never encrypted with the primary version %s: the API server has not picked up the rotation (%s)",
			role, keyID, since.UTC().Format(time.RFC3339), key.PrimaryKeyVersion, calls(facts.Calls))
	default:
		l.add(Pass, "role %s used key %s since %s: %s", role, keyID, since.UTC().Format(time.RFC3339), calls(facts.Calls))
	}
	return l, facts
}

func calls(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s x%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
