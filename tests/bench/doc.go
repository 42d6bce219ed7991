// Package bench compares rekey with the kubectl pipelines people run by hand, on the same Secrets
// in one control plane, and reports objects/s ratios and rekey's peak RSS (make bench).
package bench
