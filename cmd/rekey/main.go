// Command rekey re-encrypts Kubernetes Secrets under the current KMS key version and proves it.
// See `rekey --help`.
package main

import (
	"os"

	"github.com/rekey-dev/rekey/cmd/rekey/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) }
