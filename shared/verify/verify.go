package verify

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/actiontrail"
	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/replicas"
)

// DefaultAuditRole is the RAM role ACK's control plane assumes to call KMS for Secret encryption.
const DefaultAuditRole = "aliyuncsmanagedsecurityrole"

// Inputs say what to verify and how to reach it.
type Inputs struct {
	// Layers lists the layers to run (names from AllLayers). Empty: every layer whose inputs are
	// given (Available). A listed layer without its inputs makes Verify fail with an *InputError.
	Layers []string

	// KMS and KeyID enable the kms layer (and give the storage and audit layers the primary version).
	KMS   kms.Client
	KeyID string

	// Etcd enables the storage layer over Resources (default secrets), found under EtcdPrefix
	// (the API server's --etcd-prefix, default etcdscan.DefaultEtcdPrefix) with
	// etcdscan.ResourcePrefix. EtcdEndpoints only name the etcd in the report.
	Etcd          clientv3.KV
	EtcdPrefix    string
	EtcdEndpoints []string
	Resources     []schema.GroupResource
	// ExpectKeyID is the KMS v2 keyID values must carry when no KMS key is given.
	ExpectKeyID string

	// Convergence enables the convergence layer: it runs this engine (strategy rewrite).
	Convergence *reencrypt.Engine
	// ConvergencePass, instead of Convergence, is a rewrite pass already run, for example one resumed
	// from checkpoints over several invocations (package job): the layer judges it as it would judge
	// the pass Convergence runs. Its Total (and Routes) must add up the whole pass.
	ConvergencePass *reencrypt.Summary
	// Replicas are the API server replicas the convergence pass was spread over (package replicas:
	// the engine's Routes are Replicas.Routes()). The layer PASSes only when every replica served
	// part of the pass; nil: the replicas are not known, and the layer cannot PASS unless the pass
	// shows a single replica.
	Replicas *replicas.Set

	// APIServer enables the apiserver layer (a REST client of the cluster).
	APIServer rest.Interface

	// Trail (with KMS and KeyID) enables the audit layer. The expected caller is the RAM user
	// AuditUser when given, else the role AuditRole (default DefaultAuditRole). AuditSince
	// defaults to the key's last rotation.
	Trail      actiontrail.Lookuper
	AuditRole  string
	AuditUser  string
	AuditSince time.Time

	// MaxNames bounds the object names listed per layer (default 20).
	MaxNames int
	// Clock gives the current time (default the real clock).
	Clock clock.PassiveClock
}

// Verify runs the layers Inputs.Layers names, or every layer whose inputs are given. It returns an
// *InputError when a listed layer lacks its inputs, and ctx's error when ctx ends; every other
// problem is a layer result.
func Verify(ctx context.Context, in Inputs) (Report, error) {
	if in.Clock == nil {
		in.Clock = clock.RealClock{}
	}
	if in.MaxNames <= 0 {
		in.MaxNames = 20
	}
	layers, defaulted, err := in.selectLayers()
	if err != nil {
		return Report{}, fmt.Errorf("verify: %w", err)
	}
	r := Report{CheckedAt: in.Clock.Now(), RequestedLayers: layers, LayersDefaulted: defaulted}
	primary := in.ExpectKeyID
	for _, layer := range layers {
		switch layer {
		case LayerKMS:
			l, facts := CheckKey(ctx, in.KMS, in.KeyID)
			r.Layers = append(r.Layers, l)
			r.Key = facts
		case LayerStorage:
			if r.Key == nil && in.KMS != nil && in.KeyID != "" {
				facts, err := describeKey(ctx, in.KMS, in.KeyID)
				if err != nil {
					l := LayerResult{Name: LayerStorage}
					l.failOrUnknown(err, "cannot describe key %s to learn its primary version: %v", in.KeyID, err)
					r.Layers = append(r.Layers, l)
					continue
				}
				r.Key = facts
			}
			if r.Key != nil && r.Key.PrimaryKeyVersion != "" {
				primary = r.Key.PrimaryKeyVersion
			}
			l, scans := checkStorage(ctx, in, primary)
			r.Layers = append(r.Layers, l)
			r.Storage = scans
		case LayerConvergence:
			l, s, cov := checkConvergence(ctx, in.Convergence, in.ConvergencePass, in.Replicas, in.MaxNames)
			r.Layers = append(r.Layers, l)
			r.Convergence, r.Replicas = s, cov
		case LayerAPIServer:
			r.Layers = append(r.Layers, checkAPIServer(ctx, in.APIServer))
		case LayerAudit:
			if r.Key == nil {
				facts, err := describeKey(ctx, in.KMS, in.KeyID)
				if err != nil {
					l := LayerResult{Name: LayerAudit}
					l.failOrUnknown(err, "cannot describe key %s to learn its primary version: %v", in.KeyID, err)
					r.Layers = append(r.Layers, l)
					continue
				}
				r.Key = facts
			}
			l, facts := checkAudit(ctx, in, r.Key)
			r.Layers = append(r.Layers, l)
			r.Audit = facts
		}
	}
	r.finish()
	if r.Key != nil && r.Key.PrimaryKeyVersion != "" {
		primary = r.Key.PrimaryKeyVersion
	}
	resources := len(in.Resources)
	if resources == 0 {
		resources = 1 // secrets
	}
	ret := retirement(r, primary, resources)
	r.Retirement = &ret
	if err := ctx.Err(); err != nil {
		return r, fmt.Errorf("verify: %w", err)
	}
	return r, nil
}
