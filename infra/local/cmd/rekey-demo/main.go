// Command rekey-demo tells rekey's stories on the local stack (make demo): the CLI one (rekey verify
// FAIL, rekey run, rekey verify PASS), then the serverless one on the local twin (KMS rotation
// event -> rotation function -> job -> off-peak tick -> re-encryption -> verifier PASS; DisableKey
// -> alert), which ends with rekey status and rekey history -o markdown of the rotation. It exits
// non-zero when any step fails.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rekey-dev/rekey/infra/local/demo"
)

func main() {
	cfg := demo.Config{Out: os.Stdout, Err: os.Stderr}
	var story string
	var functionLogs bool
	flag.StringVar(&story, "story", "all", "which story: serverless, cli or all")
	flag.StringVar(&cfg.Rekey, "rekey", "bin/rekey", "path of the rekey binary (cli story)")
	flag.IntVar(&cfg.Secrets, "secrets", 2000, "number of Secrets to create")
	flag.BoolVar(&functionLogs, "function-logs", false, "print what the functions log (serverless story)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, story, cfg, functionLogs); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, story string, cfg demo.Config, functionLogs bool) error {
	var fnLog io.Writer
	if functionLogs {
		fnLog = os.Stderr
	}
	serverless := func() error {
		fmt.Fprintln(cfg.Out, "=== the serverless story: Function Compute + EventBridge on the local twin")
		return demo.Serverless(ctx, demo.ServerlessConfig{Secrets: cfg.Secrets, Out: cfg.Out, FunctionLog: fnLog, Rekey: cfg.Rekey})
	}
	cli := func() error {
		fmt.Fprintln(cfg.Out, "\n=== the CLI story: rekey verify, rekey run, rekey verify")
		return demo.Run(ctx, cfg)
	}
	switch story {
	case "serverless":
		return serverless()
	case "cli":
		return cli()
	case "all":
		// The CLI story first: the serverless one ends with what a team reads every morning
		// (rekey status) and what an auditor receives (rekey history).
		if err := cli(); err != nil {
			return err
		}
		return serverless()
	default:
		return fmt.Errorf("rekey-demo: -story %q: want serverless, cli or all", story)
	}
}
