// Package replicas finds the kube-apiserver replicas behind a cluster's address and opens one
// connection to each, so that a pass can be spread over every replica and a proof can say which
// replicas it covered.
//
// # Why
//
// A managed control plane (ACK Pro) runs several API server replicas behind a load balancer that
// pins each TCP connection to one replica, and client-go sends every request of a client over one
// HTTP/2 connection. A rewrite pass through one client is therefore judged by one replica only: a
// replica still encrypting with an old key version could have rewritten objects back to it, and a
// convergence pass through another replica would not see it. Each replica adopts a new key version
// on its own KMS Status poll, so replicas disagree for a while after every rotation.
//
// # How
//
// Expected replicas come from the API servers' identity Leases (kube-system, label
// apiserver.kubernetes.io/identity=kube-apiserver, renewed every 10 s by each live replica; the Lease
// name is the API server's ID, and sha256 of it is the apiserver_id_hash label of its metrics).
// [Discover] then opens connections, each with a transport of its own (one HTTP/2 connection, so
// one replica), and identifies the replica behind each by reading /metrics over that same
// connection (any series labelled apiserver_id_hash). It keeps one connection per replica and stops
// once every expected replica has one, or after a bounded number of attempts. [Set.Recheck] asks
// each connection again at the end of a pass, so a connection that was re-dialled to another
// replica mid-pass is caught instead of being counted for the wrong one.
//
// What it cannot know: without list on Leases in kube-system the number of replicas is unknown
// (the Set says so, and counts only the replicas its connections reached); without get on /metrics
// no connection can be told apart, which is proof enough only when the Leases show a single
// replica. Nothing here reads Secret data.
package replicas
