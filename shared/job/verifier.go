package job

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/verify"
)

// verifier runs the verifier's layers for the job: kms (with a key), storage (with etcd),
// convergence, apiserver, and audit (with ActionTrail and a key). conv, when set, is the
// convergence pass already run from checkpoints; otherwise the layer runs a rewrite pass itself.
func (r *runner) verifier(ctx context.Context, conv *reencrypt.Summary) (verify.Report, error) {
	d := r.deps
	in := verify.Inputs{
		KMS: d.KMS, KeyID: r.spec.KeyID, Etcd: d.Etcd, EtcdPrefix: d.EtcdPrefix, EtcdEndpoints: d.EtcdEndpoints,
		APIServer: r.disco.RESTClient(), Trail: d.Trail, AuditRole: d.AuditRole, AuditUser: d.AuditUser,
		ConvergencePass: conv, Replicas: r.replicas,
	}
	if d.AuditUser != "" {
		in.AuditRole = ""
	}
	if r.spec.KeyID == "" {
		in.KMS, in.Trail = nil, nil
	}
	for _, t := range r.targets {
		in.Resources = append(in.Resources, schema.GroupResource{Group: t.GVR.Group, Resource: t.GVR.Resource})
	}
	if conv == nil {
		e, err := r.engine(reencrypt.Rewrite, nil)
		if err != nil {
			return verify.Report{}, err
		}
		in.Convergence = e
	}
	in.Layers = in.Available()
	report, err := verify.Verify(ctx, in)
	if err != nil {
		return report, fmt.Errorf("verify: %w", err)
	}
	r.log.Info().Str("verdict", string(report.Verdict)).Strs("layers", report.RequestedLayers).Msg("verified")
	return report, nil
}
