package adoption

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// effectCanary is one usable effect canary and what the gate knows about it.
type effectCanary struct {
	name, rv string
	// atPrimary: stored under the primary version; otherwise under its predecessor.
	atPrimary bool
	// direct: its record came from direct evidence (not a settle delay).
	direct bool
}

// canaries lists the effect canaries and the ledger.
func (r *run) canaries(ctx context.Context) (map[string]*corev1.Secret, *corev1.Secret, error) {
	cctx, cancel := r.call(ctx)
	defer cancel()
	list, err := r.g.Secrets.List(cctx, metav1.ListOptions{LabelSelector: fmt.Sprintf("%s in (%s,%s)", CanaryLabel, EffectCanary, LedgerCanary)})
	if err != nil {
		return nil, nil, fmt.Errorf("list canaries in namespace %s: %w", r.g.Namespace, err)
	}
	effect := map[string]*corev1.Secret{}
	var ledger *corev1.Secret
	for i := range list.Items {
		s := &list.Items[i]
		switch {
		case s.Name == LedgerName:
			ledger = s
		case s.Labels[CanaryLabel] == EffectCanary:
			effect[s.Name] = s
		}
	}
	return effect, ledger, nil
}

// canary proves adoption with no-op patches of canaries recorded under the primary or its
// predecessor (see the package documentation for the reasoning).
func (r *run) canary(ctx context.Context) (Evidence, error) {
	if r.g.Secrets == nil {
		return Evidence{}, unavailable("no client for canaries in namespace %s", r.g.Namespace)
	}
	effect, ledger, err := r.canaries(ctx)
	if err != nil {
		return Evidence{}, unavailable("%v", err)
	}
	usable, why := r.usableCanaries(effect, ledger)
	if len(usable) == 0 {
		return Evidence{}, unavailable("no canary can prove the rotation: %s (canaries are recorded after adoption is established, and prove the next rotation)", why)
	}
	var ev Evidence
	recordedDirect := true // every canary recorded under the primary was recorded after direct evidence
	for _, c := range usable {
		if c.atPrimary && !c.direct {
			recordedDirect = false
		}
	}
	streak, next := 0, 0
	err = r.poll(ctx, func(ctx context.Context) (bool, bool, error) {
		if len(usable) == 0 {
			return false, false, unavailable("the canaries were written or deleted by someone else during the wait")
		}
		next %= len(usable)
		c := usable[next]
		next++
		ev.Samples++
		rv, err := r.noopPatch(ctx, c.name, c.rv)
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			// Someone else wrote or deleted it: what it is stored under is no longer known.
			streak = 0
			usable = removeCanary(usable, c.name)
			r.last = fmt.Sprintf("canary %s changed by another writer", c.name)
			return false, false, nil
		}
		if err != nil {
			streak = 0
			return false, false, err
		}
		if rv != c.rv {
			// The serving replica's current key differs from the one the canary was stored under;
			// the canary is now stored under the replica's key (the other of predecessor/primary).
			c.rv, c.atPrimary = rv, !c.atPrimary
			ev.Changes++
			streak = 0
			if c.atPrimary {
				r.last = fmt.Sprintf("canary %s rewritten by an API server on key version %s; waiting for every API server to agree", c.name, r.primary)
				return true, false, nil
			}
			r.last = fmt.Sprintf("canary %s rewritten by an API server still on key version %s", c.name, r.g.Predecessor)
			return false, false, nil
		}
		if !c.atPrimary {
			streak = 0
			r.last = fmt.Sprintf("canary %s unchanged: the serving API server still encrypts with key version %s", c.name, r.g.Predecessor)
			return false, false, nil
		}
		streak++
		ev.Confirmations = streak
		return true, streak >= r.g.Confirmations, nil
	})
	if err != nil {
		return Evidence{}, err
	}
	// A canary rewritten by a no-op patch shows a KMS v2 key-ID change in this run; without one the
	// proof rests on how the canaries were recorded.
	ev.Direct = ev.Changes > 0 || recordedDirect
	ev.Detail = fmt.Sprintf("%d consecutive no-op patches of canaries stored under key version %s changed nothing (%d canary rewrite(s) before)", ev.Confirmations, r.primary, ev.Changes)
	if !ev.Direct {
		ev.Detail += "; the canaries were recorded after a settle delay, not direct evidence"
	}
	return ev, nil
}

// usableCanaries returns the canaries whose stored version is known (recorded under the primary or
// its predecessor, and not written since), and otherwise why none is.
func (r *run) usableCanaries(effect map[string]*corev1.Secret, ledger *corev1.Secret) ([]*effectCanary, string) {
	if len(effect) == 0 {
		return nil, "none exists yet in namespace " + r.g.Namespace
	}
	if ledger == nil {
		return nil, fmt.Sprintf("%d canaries but no ledger %s/%s", len(effect), r.g.Namespace, LedgerName)
	}
	names := make([]string, 0, len(effect))
	for n := range effect {
		names = append(names, n)
	}
	sort.Strings(names)
	var usable []*effectCanary
	var reasons []string
	for _, n := range names {
		s := effect[n]
		v := s.Annotations[ProvedVersionAnnotation]
		switch {
		case ledger.Annotations[LedgerAnnotationPrefix+n] != s.ResourceVersion:
			reasons = append(reasons, n+" was written since its version was recorded")
		case v == "":
			reasons = append(reasons, n+" has no recorded version")
		case v == r.primary:
			usable = append(usable, &effectCanary{name: n, rv: s.ResourceVersion, atPrimary: true, direct: directKind(s.Annotations[ProvedByAnnotation])})
		case r.g.Predecessor != "" && v == r.g.Predecessor:
			usable = append(usable, &effectCanary{name: n, rv: s.ResourceVersion, direct: directKind(s.Annotations[ProvedByAnnotation])})
		case r.g.Predecessor == "":
			reasons = append(reasons, fmt.Sprintf("%s is recorded under version %s and the primary's predecessor is unknown", n, v))
		default:
			reasons = append(reasons, fmt.Sprintf("%s is recorded under version %s, not the primary's predecessor %s", n, v, r.g.Predecessor))
		}
	}
	return usable, strings.Join(reasons, "; ")
}

func removeCanary(cs []*effectCanary, name string) []*effectCanary {
	out := cs[:0]
	for _, c := range cs {
		if c.name != name {
			out = append(out, c)
		}
	}
	return out
}

// noopPatch sends the engine's rewrite patch to a canary and returns its resourceVersion after.
func (r *run) noopPatch(ctx context.Context, name, rv string) (string, error) {
	body, err := json.Marshal(map[string]any{"metadata": map[string]string{"resourceVersion": rv}})
	if err != nil {
		return "", fmt.Errorf("build no-op patch: %w", err)
	}
	cctx, cancel := r.call(ctx)
	defer cancel()
	s, err := r.g.Secrets.Patch(cctx, name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: r.g.FieldManager})
	if err != nil {
		return "", fmt.Errorf("no-op patch of canary %s/%s: %w", r.g.Namespace, name, err)
	}
	return s.ResourceVersion, nil
}

// record stores the adopted version on the effect canaries (creating missing ones), checks that no
// API server disagrees, and writes the ledger. It waits and tries again while API servers
// disagree, until the deadline.
func (r *run) record(ctx context.Context, ev *Evidence) error {
	if r.g.Secrets == nil {
		ev.Notes = append(ev.Notes, "no canary client: nothing recorded for the next rotation")
		return nil
	}
	backoff := r.g.SampleInterval
	for {
		rvs, err := r.writeCanaries(ctx, ev)
		var ue *unavailableError
		if errors.As(err, &ue) {
			ev.Notes = append(ev.Notes, "canaries not recorded: "+ue.reason)
			r.g.Log.Warn().Str("reason", ue.reason).Msg("adoption canaries not recorded; the next rotation will need other evidence")
			return nil
		}
		if err == nil {
			var agree bool
			if agree, err = r.confirmCanaries(ctx, rvs); err == nil && agree {
				if err = r.writeLedger(ctx, rvs, ev.KeyIDHash); err == nil {
					ev.Recorded = len(rvs)
					return nil
				}
			}
		}
		if err != nil {
			r.last = err.Error()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := r.sleep(ctx, backoff); err != nil {
			return err
		}
		backoff = min(backoff*2, r.g.MaxBackoff)
	}
}

// canaryName is the name of effect canary i.
func canaryName(i int) string { return EffectCanaryPrefix + strconv.Itoa(i) }

// writeCanaries writes the proved version on every effect canary (a real write) and returns
// name -> resourceVersion.
func (r *run) writeCanaries(ctx context.Context, ev *Evidence) (map[string]string, error) {
	provedBy := string(ev.Kind)
	if !ev.Direct {
		provedBy = string(Settle)
	}
	effect, _, err := r.canaries(ctx)
	if err != nil {
		if apierrors.IsForbidden(err) {
			return nil, unavailable("%v", err)
		}
		return nil, err
	}
	ann := map[string]string{
		ProvedVersionAnnotation: r.primary,
		ProvedByAnnotation:      provedBy,
		ProvedAtAnnotation:      r.g.Clock.Now().UTC().Format(time.RFC3339Nano),
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err != nil {
		return nil, fmt.Errorf("build canary patch: %w", err)
	}
	rvs := map[string]string{}
	for i := range r.g.Canaries {
		name := canaryName(i)
		cctx, cancel := r.call(ctx)
		var s *corev1.Secret
		if _, ok := effect[name]; ok {
			s, err = r.g.Secrets.Patch(cctx, name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: r.g.FieldManager})
		} else {
			s, err = r.g.Secrets.Create(cctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
				Name: name, Namespace: r.g.Namespace, Labels: map[string]string{CanaryLabel: EffectCanary}, Annotations: ann,
			}}, metav1.CreateOptions{FieldManager: r.g.FieldManager})
		}
		cancel()
		if err != nil {
			if apierrors.IsForbidden(err) || (apierrors.IsNotFound(err) && effect[name] == nil) {
				return nil, unavailable("write canary %s/%s: %v", r.g.Namespace, name, err)
			}
			return nil, fmt.Errorf("write canary %s/%s: %w", r.g.Namespace, name, err)
		}
		rvs[name] = s.ResourceVersion
	}
	return rvs, nil
}

// confirmCanaries sends Confirmations no-op patches over the canaries; false means one changed, so
// an API server disagrees with the one that recorded it.
func (r *run) confirmCanaries(ctx context.Context, rvs map[string]string) (bool, error) {
	names := make([]string, 0, len(rvs))
	for n := range rvs {
		names = append(names, n)
	}
	sort.Strings(names)
	agree := true
	for i := range r.g.Confirmations {
		n := names[i%len(names)]
		rv, err := r.noopPatch(ctx, n, rvs[n])
		if err != nil {
			return false, err
		}
		if rv != rvs[n] {
			rvs[n] = rv
			agree = false
			r.last = fmt.Sprintf("recording key version %s: canary %s was rewritten by an API server on another key version", r.primary, n)
		}
	}
	return agree, nil
}

// writeLedger records each canary's resourceVersion, and the KMS key-ID hash the API servers use
// for the proved version when it is known (the next rotation's Metrics evidence compares with it).
func (r *run) writeLedger(ctx context.Context, rvs map[string]string, keyIDHash string) error {
	ann := map[string]string{ProvedVersionAnnotation: r.primary}
	for n, rv := range rvs {
		ann[LedgerAnnotationPrefix+n] = rv
	}
	if keyIDHash != "" {
		ann[KeyIDHashAnnotation] = keyIDHash
	} else {
		ann[KeyIDHashAnnotation] = "" // a hash recorded for an earlier version is not this one's
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err != nil {
		return fmt.Errorf("build ledger patch: %w", err)
	}
	cctx, cancel := r.call(ctx)
	defer cancel()
	_, err = r.g.Secrets.Patch(cctx, LedgerName, types.MergePatchType, body, metav1.PatchOptions{FieldManager: r.g.FieldManager})
	if apierrors.IsNotFound(err) {
		_, err = r.g.Secrets.Create(cctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
			Name: LedgerName, Namespace: r.g.Namespace, Labels: map[string]string{CanaryLabel: LedgerCanary}, Annotations: ann,
		}}, metav1.CreateOptions{FieldManager: r.g.FieldManager})
	}
	if err != nil {
		return fmt.Errorf("write ledger %s/%s: %w", r.g.Namespace, LedgerName, err)
	}
	return nil
}

// directKind reports whether a recorded ProvedByAnnotation names direct evidence.
func directKind(by string) bool {
	switch Kind(by) {
	case Etcd, Metrics, Canary:
		return true
	}
	return false
}

// recordedHashes reads from the ledger the KMS key-ID hash recorded for the version the canaries
// were last proved under: the previous version's hash (when that version is Predecessor) or the
// primary's (a re-run). Best effort: nothing is known when the ledger cannot be read.
func (r *run) recordedHashes(ctx context.Context) {
	if r.g.Secrets == nil {
		return
	}
	_, ledger, err := r.canaries(ctx)
	if err != nil || ledger == nil {
		return
	}
	version, hash := ledger.Annotations[ProvedVersionAnnotation], ledger.Annotations[KeyIDHashAnnotation]
	switch {
	case hash == "":
	case version == r.primary:
		r.primaryHash = hash
	case version != "" && version == r.g.Predecessor && r.prevHash == "":
		r.prevHash = hash
	}
}
