// Package fc is the local twin of Alibaba Cloud Function Compute 3.0 for the
// go1 runtime: it runs the real function binaries (built with
// github.com/aliyun/fc-runtime-go-sdk's fc.Start) the way FC does.
//
//   - RuntimeAPI serves the runtime API a function process polls through
//     FC_RUNTIME_API=host:port: GET /2020-11-11/runtime/invocation/next (the
//     event, with x-fc-request-id, x-fc-function-deadline in epoch
//     milliseconds, x-fc-function-timeout, the role's credentials and the
//     function's name, handler, memory, region, account and retry count), and
//     POST {id}/response or {id}/error. Several next calls may wait at once.
//   - Supervisor starts a function's binary with that variable, the FC system
//     variables (FC_FUNCTION_NAME, FC_REGION, FC_ACCOUNT_ID,
//     ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET/_SECURITY_TOKEN) and the function's
//     own environment, and nothing inherited. It invokes synchronously
//     (Invoke) or asynchronously with FC's retries (InvokeAsync), runs one
//     invocation per process and more processes under concurrency, and
//     enforces the timeout: a function that overruns is killed (its process
//     group), reported as timed out, and replaced by a fresh process on the
//     next invocation. Everything the processes print is kept per function
//     (Logs) for scans.
package fc
