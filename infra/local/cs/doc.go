// Package cs is a local stand-in for the one Alibaba Cloud Container Service
// (ACK, API version 2015-12-15, ROA style) call rekey makes:
// DescribeClusterUserKubeconfig, GET /k8s/{ClusterId}/user_config with the
// query parameters PrivateIpAddress and TemporaryDurationMinutes (15..4320),
// answered {"config": "<kubeconfig>", "expiration": "<RFC 3339>"}.
//
// A Server is an http.Handler that the unmodified
// github.com/aliyun/alibaba-cloud-sdk-go services/cs client works against
// (set request.Domain and request.Port separately: client.Domain =
// "host:port" builds an invalid ROA URL). It verifies the ROA HMAC-SHA1
// signature and the STS token of every request against credentials of the
// KMS stand-in's kmsapi.Credential type, answers errors as CS does, with
// lower-case "code" and "message" (which the SDK's ErrorCode does not read:
// rely on the HTTP status), and serves the kubeconfig registered per cluster
// ID. Successful calls are kept (Calls) so tests can check what was asked.
package cs
