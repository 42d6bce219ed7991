// Command rekey-demo runs rekey's story on the local stack (make demo).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rekey-dev/rekey/infra/local/demo"
)

func main() {
	cfg := demo.Config{Out: os.Stdout, Err: os.Stderr}
	flag.StringVar(&cfg.Rekey, "rekey", "bin/rekey", "path of the rekey binary")
	flag.IntVar(&cfg.Secrets, "secrets", 2000, "number of Secrets to create")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
