package adoption

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// etcd proves adoption from the stored values of Confirmations consecutive canary writes.
func (r *run) etcd(ctx context.Context) (Evidence, error) {
	switch {
	case r.g.Etcd == nil:
		return Evidence{}, unavailable("etcd is not readable (no etcd endpoints given)")
	case r.g.Secrets == nil:
		return Evidence{}, unavailable("no client for canaries in namespace %s", r.g.Namespace)
	}
	key := r.g.EtcdPrefix + "/secrets/" + r.g.Namespace + "/" + EtcdCanaryName
	var ev Evidence
	streak, first := 0, true
	err := r.poll(ctx, func(ctx context.Context) (bool, bool, error) {
		wasFirst := first
		first = false
		ev.Samples++
		rv, err := r.writeEtcdCanary(ctx)
		if err != nil {
			streak = 0
			if wasFirst && (apierrors.IsForbidden(err) || apierrors.IsNotFound(err)) {
				return false, false, unavailable("cannot write the canary %s/%s: %v", r.g.Namespace, EtcdCanaryName, err)
			}
			return false, false, err
		}
		cctx, cancel := r.call(ctx)
		resp, err := r.g.Etcd.Get(cctx, key)
		cancel()
		if err == nil && len(resp.Kvs) == 0 {
			err = fmt.Errorf("etcd has no value at %s (is --etcd-prefix the API server's, and this the etcd that stores Secrets?)", key)
		}
		if err != nil {
			streak = 0
			if wasFirst {
				return false, false, unavailable("read the canary from etcd: %v", err)
			}
			return false, false, fmt.Errorf("read the canary from etcd: %w", err)
		}
		kv := resp.Kvs[0]
		if strconv.FormatInt(kv.ModRevision, 10) != rv {
			streak = 0
			r.last = fmt.Sprintf("canary %s written concurrently (etcd revision %d, write returned %s)", EtcdCanaryName, kv.ModRevision, rv)
			return false, false, nil
		}
		v, err := storedvalue.Classify(kv.Value)
		if err != nil {
			streak = 0
			return false, false, fmt.Errorf("classify the canary's stored value: %w", err)
		}
		if v.Provider != storedvalue.KMSv2 || v.KeyID != r.primary {
			streak = 0
			r.last = fmt.Sprintf("canary write %d stored as %s, not under key version %s", ev.Samples, v.RedactedClass(), r.primary)
			r.g.Log.Debug().Str("stored", v.RedactedClass()).Msg("etcd canary not under the primary version")
			return false, false, nil
		}
		streak++
		ev.Confirmations = streak
		return true, streak >= r.g.Confirmations, nil
	})
	if err != nil {
		return Evidence{}, err
	}
	ev.Direct = true
	ev.Detail = fmt.Sprintf("%d consecutive canary writes stored in etcd under key version %s", ev.Confirmations, r.primary)
	return ev, nil
}

// writeEtcdCanary changes the etcd canary (creating it if needed) and returns the resourceVersion
// of the write.
func (r *run) writeEtcdCanary(ctx context.Context) (string, error) {
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	probe := hex.EncodeToString(nonce)
	cctx, cancel := r.call(ctx)
	defer cancel()
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{ProbeAnnotation: probe}}})
	if err != nil {
		return "", fmt.Errorf("build canary patch: %w", err)
	}
	s, err := r.g.Secrets.Patch(cctx, EtcdCanaryName, types.MergePatchType, body, metav1.PatchOptions{FieldManager: r.g.FieldManager})
	if apierrors.IsNotFound(err) {
		s, err = r.g.Secrets.Create(cctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
			Name: EtcdCanaryName, Namespace: r.g.Namespace,
			Labels:      map[string]string{CanaryLabel: EtcdCanary},
			Annotations: map[string]string{ProbeAnnotation: probe},
		}}, metav1.CreateOptions{FieldManager: r.g.FieldManager})
		if apierrors.IsAlreadyExists(err) { // created concurrently: the next sample patches it
			return "", fmt.Errorf("create canary %s/%s: %w", r.g.Namespace, EtcdCanaryName, err)
		}
	}
	if err != nil {
		return "", fmt.Errorf("write canary %s/%s: %w", r.g.Namespace, EtcdCanaryName, err)
	}
	return s.ResourceVersion, nil
}
