// Command kms-local serves the local Alibaba Cloud KMS and ActionTrail
// stand-in (package kmsapi) over HTTP. When ready it prints one JSON line on
// stdout: {"listen":"127.0.0.1:PORT","keyId":"...",...}. It exits cleanly on
// SIGINT or SIGTERM.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kms-local:", err)
		os.Exit(1)
	}
}

// ready is the line printed on stdout once the server accepts connections.
type ready struct {
	Listen    string `json:"listen"`
	Region    string `json:"region"`
	AccountID string `json:"accountId"`
	KeyID     string `json:"keyId,omitempty"`
	KeyAlias  string `json:"keyAlias,omitempty"`
	StateFile string `json:"stateFile,omitempty"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kms-local", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	statePath := fs.String("state", "", "JSON state file (empty: keep state in memory)")
	region := fs.String("region", kmsapi.DefaultRegion, "region reported in ARNs and records")
	account := fs.String("account", kmsapi.DefaultAccountID, "account UID that owns the keys")
	credsPath := fs.String("credentials", "", "JSON list of credentials (empty: the fixed development credential)")
	createKey := fs.Bool("create-key", false, "create a key bound to -key-alias on first start and print its ID")
	keyAlias := fs.String("key-alias", "alias/rekey-local", "alias of the key -create-key ensures")
	rotationCheck := fs.Duration("rotation-check", kmsapi.DefaultRotationCheckInterval, "how often automatic rotation and deletion are evaluated")
	minVersionInterval := fs.Duration("min-version-interval", 0, "refuse CreateKeyVersion this soon after the last rotation (0: off)")
	verbose := fs.Bool("v", false, "log one line per call on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}

	creds := []kmsapi.Credential{kmsapi.DevCredential()}
	if *credsPath != "" {
		var err error
		if creds, err = loadCredentials(*credsPath); err != nil {
			return err
		}
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	srv, err := kmsapi.NewServer(kmsapi.Options{
		Region:                *region,
		AccountID:             *account,
		Credentials:           creds,
		StatePath:             *statePath,
		RotationCheckInterval: *rotationCheck,
		MinVersionInterval:    *minVersionInterval,
		Logger:                slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		return err
	}
	out := ready{Region: *region, AccountID: *account, StateFile: *statePath}
	if *createKey {
		if out.KeyID, _, err = srv.EnsureKey(*keyAlias); err != nil {
			return err
		}
		out.KeyAlias = *keyAlias
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	out.Listen = ln.Addr().String()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(runCtx) }()

	line, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("encode ready line: %w", err)
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", line); err != nil {
		return fmt.Errorf("print ready line: %w", err)
	}

	var result error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			result = fmt.Errorf("serve: %w", err)
		}
	}
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	if err := hs.Shutdown(shutdownCtx); err != nil && result == nil {
		result = fmt.Errorf("shutdown: %w", err)
	}
	cancel()
	if err := <-runDone; err != nil && result == nil {
		result = err
	}
	return result
}

// loadCredentials reads a JSON list of kmsapi.Credential.
func loadCredentials(path string) ([]kmsapi.Credential, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var creds []kmsapi.Credential
	if err := dec.Decode(&creds); err != nil {
		return nil, fmt.Errorf("decode credentials %s: %w", path, err)
	}
	if len(creds) == 0 {
		return nil, fmt.Errorf("decode credentials %s: no credentials", path)
	}
	return creds, nil
}
