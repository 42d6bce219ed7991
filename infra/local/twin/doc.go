// Package twin starts the whole local cloud rekey's serverless product runs on, for the e2e suite
// and make demo:
//
//   - a real etcd and kube-apiserver (infra/local/controlplane) encrypting Secrets at rest with
//     KMS v2 through rekey's plugin and the Alibaba Cloud KMS API stand-in (infra/local/kmsstack);
//   - the KMS stand-in's write-type ActionTrail records published as acs.kms CloudEvents
//     (eventbridge.KMSBridge) to a local EventBridge router (infra/local/eventbridge) whose rules
//     are the eventbridge triggers of the repository's s.yaml, each routed to its function;
//   - the Container Service stand-in (infra/local/cs) serving, for the twin's cluster ID, a
//     kubeconfig of the control plane whose identity is bound by infra/rbac/rekey-function.yaml and
//     by nothing else;
//   - a Function Compute supervisor (infra/local/fc) running the real function binaries, built from
//     ./functions/<name>, with the handler, environment, timeout and async retries s.yaml declares
//     (infra/local/sconfig; ${env('X')} answered from Twin.Env, which points REKEY_* at the local
//     endpoints with REKEY_ENDPOINT_SCHEME=HTTP), and the role's STS credential that the KMS,
//     ActionTrail and CS stand-ins accept;
//   - the timer triggers of s.yaml, fired on demand (Twin.Tick) with a chosen triggerTime;
//   - a webhook receiver capturing the alerts the functions post (Webhook).
//
// Everything listens on loopback. Nothing here prints a credential or a Secret value; Twin.Leaks
// scans every function's output and responses for them.
package twin
