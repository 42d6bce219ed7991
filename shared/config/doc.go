// Package config loads and validates the configuration of rekey's Function Compute functions from
// environment variables (REKEY_*), through a getenv function so that tests and the local twin need no
// process environment. Load returns one error that lists every problem with its fix.
//
// The names here are the contract with s.yaml and the README: see Vars.
//
// Nothing in this package prints a secret: the webhook URL (which may carry a robot token) is redacted
// in every String, error and JSON form.
package config

// time/tzdata embeds the zone database so that REKEY_TIMEZONE works in a minimal FC image.
import _ "time/tzdata"
