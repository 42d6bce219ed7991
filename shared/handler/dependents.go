package handler

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/shared/alicloud"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/policy"
)

// What a critical KMS alert (DisableKey, ScheduleKeyDeletion, DeleteKeyMaterial on a watched key)
// says depends on the key, per cluster at risk. It must be bounded (the alert is the point, and it
// must go out even when a cluster does not answer) and read-only, so:
//
//   - Objects: one LIST of Secrets with limit 1 (SecretCounter); the API server answers with
//     remainingItemCount, counted from etcd. Every Secret of the cluster is encrypted with the
//     key, in one version or another, so all of them become unreadable without it.
//   - OldVersions: from the state the jobs keep (no API call): 0 when the key's current primary
//     version is the version last verified on the cluster (every Secret was proved under it, and
//     the API servers write new ones under it); unknown (-1) otherwise, with the job in progress
//     and its checkpoint's counts when there is one. The functions have no etcd access (ACK), and
//     the API cannot tell which version encrypts a stored object: a storage scan (`rekey verify
//     --etcd-endpoints ...`) is the only exact count.
//
// Each call has its own timeout and all of them share dependentsBudget; a failure leaves the count
// unknown with its reason, and never holds the alert back.
const (
	dependentsBudget = 10 * time.Second
	countTimeout     = 5 * time.Second
)

// SecretCounter counts the Secrets of an opened cluster.
type SecretCounter func(ctx context.Context, c Cluster) (int64, error)

var secretsGVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// CountSecrets is the SecretCounter of production: one metadata LIST of Secrets in all namespaces
// with limit 1; the count is the item returned plus the API server's remainingItemCount.
func CountSecrets(ctx context.Context, c Cluster) (int64, error) {
	if c.Rest == nil {
		return -1, fmt.Errorf("cluster %s: no REST configuration", c.ID)
	}
	m, err := metadata.NewForConfig(rest.CopyConfig(c.Rest))
	if err != nil {
		return -1, fmt.Errorf("metadata client of cluster %s: %w", c.ID, err)
	}
	list, err := m.Resource(secretsGVR).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return -1, fmt.Errorf("count Secrets of cluster %s: %w", c.ID, err)
	}
	n := int64(len(list.Items))
	switch {
	case list.RemainingItemCount != nil:
		n += *list.RemainingItemCount
	case list.Continue != "":
		return -1, fmt.Errorf("count Secrets of cluster %s: the API server gave no remainingItemCount", c.ID)
	}
	return n, nil
}

// dangerous reports whether a decision is a critical alert about a watched key.
func dangerous(d policy.Decision) bool {
	if d.Kind != policy.Alert || d.Notice == nil || d.Notice.Severity != policy.Critical {
		return false
	}
	switch d.Notice.Action {
	case events.KMSDisableKey, events.KMSScheduleKeyDeletion, events.KMSDeleteKeyMaterial:
		return true
	}
	return false
}

// dependents fills in n.DependentObjects for each cluster at risk and adds them to n.Impact.
func (h *base) dependents(ctx context.Context, o *opened, n *policy.Notice, log *zerolog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, dependentsBudget)
	defer cancel()
	described := map[string]kms.KeyMetadata{}
	var parts []string
	for _, id := range n.Clusters {
		d := h.dependentsOf(ctx, o, id, described)
		n.DependentObjects = append(n.DependentObjects, d)
		parts = append(parts, dependentsText(d))
	}
	if len(parts) > 0 {
		n.Impact = strings.TrimSuffix(n.Impact, ".") + ". Dependent Secrets: " + strings.Join(parts, "; ") + "."
	}
	for _, d := range n.DependentObjects {
		log.Warn().Str("cluster", d.Cluster).Int64("objects", d.Objects).Int64("oldVersions", d.OldVersions).Str("primary", d.Primary).
			Str("verified", d.Verified).Msg("alert: objects that depend on the key: " + d.Source)
	}
}

func (h *base) dependentsOf(ctx context.Context, o *opened, id string, described map[string]kms.KeyMetadata) policy.DependentObjects {
	d := policy.DependentObjects{Cluster: id, Objects: -1, OldVersions: -1}
	c, ok := o.clusters[id]
	target, configured := h.deps.Config.Target(id)
	if !ok || !configured {
		d.Source = "cluster not opened in this invocation: unknown"
		return d
	}
	var src []string
	cctx, cancel := context.WithTimeout(ctx, countTimeout)
	count, err := h.deps.CountSecrets(cctx, c)
	cancel()
	if err != nil {
		src = append(src, "Secrets not counted: "+err.Error())
	} else {
		d.Objects = count
		src = append(src, "Secrets counted by the API server (LIST limit 1, remainingItemCount)")
	}

	md, ok := described[target.Key]
	if !ok {
		var err error
		if md, err = h.deps.KMS.DescribeKey(ctx, target.Key); err != nil {
			src = append(src, fmt.Sprintf("primary version unknown (describe key %s: %v)", alicloud.Redact(target.Key), err))
		} else {
			described[target.Key] = md
		}
	}
	d.Primary = md.PrimaryKeyVersion
	if c.Store == nil {
		d.Source = strings.Join(append(src, "no state: older versions unknown"), "; ")
		return d
	}
	if verified, err := c.Store.VerifiedVersions(ctx); err != nil {
		src = append(src, "verified versions not read: "+err.Error())
	} else {
		for _, v := range verified {
			if v.Key == target.Key {
				d.Verified, d.VerifiedAt = v.Version, v.At
			}
		}
	}
	switch {
	case d.Primary != "" && d.Verified == d.Primary:
		d.OldVersions = 0
		src = append(src, fmt.Sprintf("none under older versions: the primary version %s was verified on the cluster at %s (state), and the API servers write under it since",
			d.Primary, d.VerifiedAt.UTC().Format(time.RFC3339)))
	case d.Verified != "":
		src = append(src, fmt.Sprintf("under older versions: unknown, the primary version %s is not verified yet (last verified %s); only a storage scan counts them exactly", orDash(d.Primary), d.Verified))
	default:
		src = append(src, "under older versions: unknown, no version verified on the cluster yet; only a storage scan counts them exactly")
	}
	if pending, err := c.Store.Pending(ctx); err == nil {
		for _, j := range pending {
			if j.Key != target.Key {
				continue
			}
			cp, found, err := c.Store.LoadCheckpoint(ctx, j.ID)
			switch {
			case err != nil:
				d.Job = fmt.Sprintf("job %s pending (checkpoint not read: %v)", j.ID, err)
			case !found:
				d.Job = fmt.Sprintf("job %s pending, not started", j.ID)
			default:
				d.Job = fmt.Sprintf("job %s in phase %s: %d objects done so far (%d rewritten, %d failed), %d invocation(s), checkpoint of %s",
					j.ID, cp.Phase, cp.Counts.Done(), cp.Counts.Rewritten, cp.Counts.Failed, cp.Invocations, cp.Updated.UTC().Format(time.RFC3339))
			}
			break
		}
	}
	d.Source = strings.Join(src, "; ")
	return d
}

// dependentsText is one cluster's part of the alert's impact.
func dependentsText(d policy.DependentObjects) string {
	objects := "an unknown number of Secrets"
	if d.Objects >= 0 {
		objects = fmt.Sprintf("%d Secrets", d.Objects)
	}
	old := "how many under older versions is unknown"
	if d.OldVersions >= 0 {
		old = fmt.Sprintf("%d under older versions (%s verified)", d.OldVersions, d.Verified)
	}
	s := fmt.Sprintf("%s: %s depend on this key, %s", d.Cluster, objects, old)
	if d.Job != "" {
		s += "; " + d.Job
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
