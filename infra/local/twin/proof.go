package twin

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// SecretsPrefix is where kube-apiserver stores Secrets in etcd.
const SecretsPrefix = "/registry/secrets/"

// ScanSecrets classifies every Secret stored in etcd against KMS v2 key version version of the
// stack's provider (the key_id the plugins write for it, KeyIDFor): Report.Stale() counts those
// under anything else. Only the tests' assertions read etcd: rekey never gets it on the twin.
func (t *Twin) ScanSecrets(ctx context.Context, version string) (etcdscan.Report, error) {
	keyID := t.KeyIDFor(version)
	r, err := etcdscan.Scan(ctx, t.Cluster.Etcd, SecretsPrefix, func(v storedvalue.Value) bool {
		return v.Provider == storedvalue.KMSv2 && v.KeyName == kmsstack.ProviderName && v.KeyID == keyID
	}, etcdscan.Options{})
	if err != nil {
		return r, fmt.Errorf("twin: scan etcd: %w", err)
	}
	return r, nil
}

// KeyIDFor is the KMS v2 key_id the twin's plugins write for key version version: the version ID
// on the Single twin, an opaque string on the ACK-shaped one.
func (t *Twin) KeyIDFor(version string) string { return t.KMS.KeyIDFor(0, version) }

// SecretRevisions returns the etcd mod revision of every stored Secret by key: a Secret written
// between two calls (a patch that re-encrypted it, an update) has a new one.
func (t *Twin) SecretRevisions(ctx context.Context) (map[string]int64, error) {
	resp, err := t.Cluster.Etcd.Get(ctx, SecretsPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("twin: read secret revisions: %w", err)
	}
	out := make(map[string]int64, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = kv.ModRevision
	}
	return out, nil
}

// WaitAPIServer waits until the API server writes new Secrets under key version version (see
// kmsstack.Stack.WaitAPIServer).
func (t *Twin) WaitAPIServer(ctx context.Context, version string) error {
	if err := t.KMS.WaitAPIServer(ctx, t.Cluster, version); err != nil {
		return fmt.Errorf("twin: %w", err)
	}
	return nil
}

// VerifiedVersion returns the key version the functions' state records as fully re-encrypted and
// verified for the twin's cluster and key ("" when none).
func (t *Twin) VerifiedVersion(ctx context.Context) (string, error) {
	st, err := t.State()
	if err != nil {
		return "", err
	}
	vs, err := st.VerifiedVersions(ctx)
	if err != nil {
		return "", fmt.Errorf("twin: %w", err)
	}
	for _, v := range vs {
		if v.Cluster == t.ClusterID {
			return v.Version, nil
		}
	}
	return "", nil
}

// TickUntilVerified fires the timer with triggerTimes inside the window, one tick after the other,
// until the state records version as verified, at most maxTicks times; each tick's invocations go
// to onTick when set. It returns every invocation the ticks made.
func (t *Twin) TickUntilVerified(ctx context.Context, version string, maxTicks int, onTick func(at time.Time, calls []Invocation, err error)) ([]Invocation, error) {
	var all []Invocation
	for i := 0; i < maxTicks; i++ {
		at, err := t.WindowTime(time.Now())
		if err != nil {
			return all, err
		}
		calls, err := t.Tick(ctx, at)
		all = append(all, calls...)
		if onTick != nil {
			onTick(at, calls, err)
		}
		if ctx.Err() != nil {
			return all, fmt.Errorf("twin: ticking until %s is verified: %w", version, ctx.Err())
		}
		got, verr := t.VerifiedVersion(ctx)
		if verr != nil {
			return all, verr
		}
		if got == version {
			return all, nil
		}
	}
	return all, fmt.Errorf("twin: %s not verified after %d ticks", version, maxTicks)
}
