// Command rekey re-encrypts Kubernetes Secrets under the current KMS key version and proves it.
// See `rekey --help`.
package main

import (
	"os"
	"runtime/debug"

	"github.com/rekey-dev/rekey/cmd/rekey/cli"
)

// memoryLimit is a soft limit on the Go runtime's memory: past it the garbage collector works
// harder, keeping the peak RSS of a large run small. GOMEMLIMIT overrides it.
const memoryLimit = 24 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
