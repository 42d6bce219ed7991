// Command rekey re-encrypts Kubernetes Secrets under the current KMS key version and proves it.
// See `rekey --help`.
package main

import (
	"fmt"
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
	stop, err := startCPUProfile(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "rekey: %v\n", err)
		os.Exit(cli.ExitUsage)
	}
	code := cli.Main(os.Args[1:], os.Stdout, os.Stderr)
	if err := stop(); err != nil {
		fmt.Fprintf(os.Stderr, "rekey: %v\n", err)
	}
	os.Exit(code)
}
