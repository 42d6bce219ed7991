// Package faults is rekey's fault-injection suite: each case runs rekey the way a user (the CLI)
// or a Function Compute invocation (package job) would, on a real etcd and kube-apiserver that
// encrypt Secrets through the KMS v2 chain (the KMS API stand-in and rekey's plugin), with a
// concurrent writer, and breaks something in the middle of the run: the API server is killed, etcd
// restarts, KMS goes away, the key is disabled, the network throttles, fails, drops and stalls
// requests, the invocation's deadline is far too short, a crashed invocation leaves its Lease.
//
// Every case ends with the same proof: a raw etcd scan finds 100% of the Secrets under the key's
// new primary version, the last run's summary agrees with the scan, and no write of the concurrent
// writer was lost. The suite prints a table (fault, what happened, Secrets re-encrypted at the end,
// lost updates, time to recover) with t.Logf and writes it as Markdown to $REKEY_FAULT_REPORT when
// that is set.
//
// The control-plane binaries must be built (make tools): a missing binary fails the suite, it
// never skips.
package faults
