package verify

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/rekey-dev/rekey/shared/etcdscan"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// checkStorage classifies every stored value of in.Resources. It passes only when every resource
// has values and all of them are KMS v2 objects under keyID; identity (plaintext) and unreadable
// values fail it with or without a key.
func checkStorage(ctx context.Context, in Inputs, keyID string) (LayerResult, []etcdscan.Report) {
	l := LayerResult{Name: LayerStorage}
	resources := in.Resources
	if len(resources) == 0 {
		resources = []schema.GroupResource{{Resource: "secrets"}}
	}
	if keyID == "" {
		l.add(Warn, "no KMS key or expected key ID given: counting classes only, which proves no value is under the current key version")
	}
	want := func(v storedvalue.Value) bool {
		if keyID == "" {
			return v.Provider != storedvalue.Identity
		}
		return v.Provider == storedvalue.KMSv2 && v.KeyID == keyID
	}
	var scans []etcdscan.Report
	for _, gr := range resources {
		res := gr.String()
		prefix := etcdscan.ResourcePrefix(in.EtcdPrefix, gr)
		rep, err := etcdscan.Scan(ctx, in.Etcd, prefix, want, etcdscan.Options{MaxNames: in.MaxNames})
		if err != nil {
			l.failOrUnknown(err, "%s: scan %s in etcd: %v", res, prefix, err)
			continue
		}
		scans = append(scans, rep)
		if rep.Total == 0 {
			l.add(Fail, "%s", emptyScan(ctx, in, res, prefix, rep.Revision))
			continue
		}
		l.add(Pass, "%s: %d values under %s at etcd revision %d: %s", res, rep.Total, prefix, rep.Revision, joinCounts(rep.ByClass, "="))
		if len(rep.ByDEKSource) > 0 {
			l.add(Pass, "%s: KMS v2 DEK source types: %s", res, joinCounts(rep.ByDEKSource, "="))
		}
		if n := rep.ByClass[string(storedvalue.Identity)]; n > 0 {
			l.add(Fail, "%s: %d of %d values are stored unencrypted (identity): encryption at rest does not cover them", res, n, rep.Total)
		}
		if rep.Unreadable > 0 {
			l.add(Fail, "%s: %d values could not be classified", res, rep.Unreadable)
		}
		if keyID == "" {
			if n := rep.Stale(); n > 0 {
				l.add(Fail, "%s: unencrypted or unreadable values, e.g. %s", res, offenders(rep))
			}
			continue
		}
		if n := rep.Stale(); n > 0 {
			l.add(Fail, "%s: %d of %d values are not under key version %s (stale), e.g. %s", res, n, rep.Total, keyID, offenders(rep))
		} else {
			l.add(Pass, "%s: every value is a KMS v2 EncryptedObject under key version %s", res, keyID)
		}
	}
	return l, scans
}

func offenders(rep etcdscan.Report) string {
	s := strings.Join(rep.Offenders, ", ")
	if rep.OffendersTruncated() {
		s += ", ..."
	}
	return s
}

// emptyScan explains a scan that found no value, with what etcd does hold to tell the likely
// causes apart.
func emptyScan(ctx context.Context, in Inputs, res, prefix string, rev int64) string {
	where := "etcd"
	if len(in.EtcdEndpoints) > 0 {
		where = "etcd " + strings.Join(in.EtcdEndpoints, ",")
	}
	msg := fmt.Sprintf("%s: scanned 0 values under %s (%s, revision %d): nothing proves how %s are stored", res, prefix, where, rev, res)
	root := in.EtcdPrefix
	if root == "" {
		root = etcdscan.DefaultEtcdPrefix
	}
	root = strings.TrimSuffix(root, "/") + "/"
	inRoot, err := etcdscan.Count(ctx, in.Etcd, root)
	if err != nil {
		return msg + fmt.Sprintf("; likely causes: not the cluster's main etcd, a wrong --etcd-prefix, or no %s exist (%v)", res, err)
	}
	if inRoot == 0 {
		all, err := etcdscan.Count(ctx, in.Etcd, "")
		switch {
		case err != nil:
			return msg + fmt.Sprintf("; etcd holds no key under %s: a wrong --etcd-prefix, or not the cluster's etcd (%v)", root, err)
		case all == 0:
			return msg + "; etcd holds no key at all: a fresh etcd, not the cluster's"
		default:
			return msg + fmt.Sprintf("; etcd holds %d keys but none under %s: the API server runs with another --etcd-prefix (give the same one), or this etcd is not the cluster's", all, root)
		}
	}
	events, err := etcdscan.Count(ctx, in.Etcd, root+"events/")
	if err == nil && events == inRoot {
		return msg + fmt.Sprintf("; all %d keys under %s are events: this looks like the events etcd (kube-apiserver --etcd-servers-overrides=/events#...), not the main one", inRoot, root)
	}
	return msg + fmt.Sprintf("; etcd holds %d other keys under %s: no %s exist in the cluster, the API server stores them in another etcd (--etcd-servers-overrides), or under another name than %s", inRoot, root, res, prefix)
}
