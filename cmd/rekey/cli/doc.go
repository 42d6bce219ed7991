// Package cli is the rekey command line: flag parsing, wiring of the shared packages, progress and
// summary output, and exit codes (0 all objects done, 1 some failed, 2 usage, configuration or
// permission errors).
package cli
