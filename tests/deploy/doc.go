// Package deploy checks s.yaml, the Serverless Devs description users deploy, against the code:
// Serverless Devs (fc3) only debug-logs schema errors and cannot be run here, so these tests are
// what stands between a typo in s.yaml and a function that never runs.
package deploy
