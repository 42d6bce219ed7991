// Package apf lets the API server's own API Priority and Fairness (APF) decide how much of it rekey
// may use. rekey ships a FlowSchema and a priority level of its own (infra/apf/rekey-apf.yaml): the
// server queues rekey's requests whenever other clients need it and lends rekey the seats nobody
// uses otherwise.
//
//   - Probe asks the server how it classifies rekey's requests: one GET /version, whose answer
//     carries the UIDs of the FlowSchema and priority level it was classified into
//     (X-Kubernetes-PF-FlowSchema-UID, X-Kubernetes-PF-PriorityLevel-UID), compared with the UID
//     of the FlowSchema named rekey (read with get on flowschemas, granted by infra/rbac). The
//     answer says whether rekey's FlowSchema is in charge, and if not, why, for people.
//   - Signals is a transport wrapper that reports every 429 answer to a sink (the pace limiter's
//     Throttle): client-go retries a 429 on its own after its Retry-After, so without it the caller
//     would only see a slower call.
//
// Package job uses both: with rekey's FlowSchema in charge the limiter starts at the full
// concurrency and guards only; without it, it starts bounded and says why once.
package apf
