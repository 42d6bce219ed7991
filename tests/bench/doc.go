// Package bench measures every way to re-encrypt N Secrets on one local control plane with the KMS
// v2 chain (make bench): the kubectl replace and annotate pipelines, rekey run (rewrite, adaptive
// and --max-speed; annotate; a converged re-run), a raw saturating client (this machine's
// ceiling) and the serverless functions on the local twin. For each N the key is rotated before
// every row and etcd is scanned after it. Each row reports wall time, objects/s, ratios to the
// replace pipeline and to the raw client (e, c-max and g run back to back in rounds; their
// median round is shown and their ratios are the median of each round's), the client's peak
// RSS, CPU and bytes received, the KMS stand-in's Encrypt/Decrypt calls, the API server's and
// etcd's CPU seconds per 1,000 objects, and the p99 latency of a foreground client GETting a
// Secret every 50 ms. Results go to results/results.md, results.json and results.png (objects/s
// and peak RSS against N).
//
// Knobs (environment):
//
//	REKEY_BENCH_N=1000,10000,50000   Secret counts, increasing (Secrets are added between them)
//	REKEY_BENCH_OUT=results          results directory (relative to tests/bench)
//	REKEY_BENCH_KUBECTL_MAX_N=10000  largest N with the kubectl pipelines (kubectl from PATH)
//	REKEY_BENCH_AESCBC_MAX_N=50000   largest N with the aescbc column (0: none)
//	REKEY_BENCH_FUNCTIONS_MAX_N=50000 largest N with the functions row
//	REKEY_BENCH_PROFILE_N=<largest>  N at which rekey --max-speed writes results/rekey-cpu.pprof
//	REKEY_BENCH_IDLE=15s             how long the idle foreground client is sampled
//	REKEY_BENCH_ROUNDS=3             rounds of the rows compared with the ceiling (e, c-max, g)
//
// BenchmarkPoliteness (make bench-politeness) measures rekey's pace on the ACK-shaped twin (two
// kube-apiserver replicas behind a pinning load balancer): rekey run as its own user with
// --max-speed, with the default pace under rekey's FlowSchema (infra/apf), with it after the
// FlowSchema is deleted, and under a priority level that may borrow without limit (not shipped), against a foreground user in the global-default priority level GETting a
// Secret every 20 ms (p50, p99 and the sample count per row; idle sampled first), in rounds, the
// key rotated before every row and etcd scanned after it. Results: results/politeness.md, .json.
//
//	REKEY_BENCH_POLITE_N=10000       Secrets
//	REKEY_BENCH_POLITE_IDLE=60s      how long the idle foreground client is sampled
//	REKEY_BENCH_POLITE_ROUNDS=2      rounds of the four rows
//	REKEY_BENCH_POLITE_SWEEP=1,4,8,16 --max-speed at these --concurrency values after the rounds ("none")
package bench
