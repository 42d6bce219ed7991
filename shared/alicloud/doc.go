// Package alicloud builds the Alibaba Cloud SDK clients rekey uses (KMS and ActionTrail, both RPC
// style; CS, ROA style) in one way: endpoint, scheme, credentials, timeouts and error
// sanitisation.
//
//   - Endpoint: the region's VPC endpoint by default (kms-vpc.<region>.aliyuncs.com and the
//     like), the public one on request, or an explicit host[:port]. The host and the port are put
//     on each request separately (request.Domain and request.Port), which both RPC and ROA requests
//     understand.
//   - Scheme: HTTPS by default. HTTP only for loopback endpoints (127.0.0.0/8, ::1, localhost):
//     anything else is a configuration error naming the endpoint.
//   - Credentials: a [Provider], asked once per call within the call's context. [Credentials] is a
//     static provider, [CredentialsFunc] one that returns the current credentials (Function
//     Compute passes them per invocation), and [DefaultCredentials] the Alibaba Cloud credentials
//     chain (environment AccessKey or STS token, RRSA/OIDC role for pods, ECS RAM role), built
//     from the SDK's own providers.
//   - Timeouts: every call is bounded by a per-call timeout and by the caller's context; both
//     cancel the HTTP request, which the SDK itself cannot do.
//   - Errors: [Sanitize] turns SDK errors into ones that are safe to log: no request URL (its query
//     carries every parameter, the AccessKey ID, the security token and the signature), no
//     string-to-sign, no response body beyond a bounded one-line message.
//
// [Client] holds a small pool of SDK clients (the SDK's client is not safe for concurrent use)
// sharing one HTTP transport. It does one attempt per [Client.Do]; retries are the caller's
// business (package retry).
package alicloud
