package kmsplugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	kmsapi "k8s.io/kms/apis/v2"
	"k8s.io/kms/pkg/service"

	"github.com/rekey-dev/rekey/shared/kms"
)

// Defaults for zero Options fields.
const (
	// DefaultTimeout is the gRPC connection timeout.
	DefaultTimeout = 10 * time.Second
	// DefaultShutdownTimeout bounds the graceful stop.
	DefaultShutdownTimeout = 10 * time.Second
	// socketMode keeps the socket to its owner (the API server runs as the same user, usually root).
	socketMode = 0o600
	// liveSocketProbe bounds the check that no other process serves on the socket path.
	liveSocketProbe = 500 * time.Millisecond
)

// Options configure Run. SocketPath, Client and KeyID are required.
type Options struct {
	// SocketPath is the unix socket to serve on (as returned by k8s.io/kms/pkg/util.ParseEndpoint;
	// a leading "@" names a Linux abstract socket).
	SocketPath string
	// Client calls KMS.
	Client kms.Client
	// KeyID is the KMS key (ID, alias or ARN) new DEKs are encrypted under.
	KeyID string
	// Timeout is the gRPC connection timeout given to service.NewGRPCService (default
	// DefaultTimeout).
	Timeout time.Duration
	// ShutdownTimeout bounds the graceful stop: RPCs still running after it are cancelled (default
	// DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// Service holds the Service's optional knobs; its Logger is Run's logger too.
	Service ServiceOptions
	// OnServing, when set, is called once the socket accepts connections.
	OnServing func()
	// Wrap, when set, wraps the Service before it is served (the local twin uses it to stand in for
	// another plugin's key_id format and Status timing): the API server talks to wrapped; watch,
	// when not nil, runs next to the Service's own Watch until Run stops. nil: the Service itself.
	Wrap func(svc *Service) (wrapped service.Service, watch func(ctx context.Context))
}

// Run serves a KMS v2 plugin for opts.KeyID on opts.SocketPath until ctx ends, then stops
// gracefully and removes the socket. A stale socket file is replaced; a live one (another process
// answers on it) or a path that is not a socket is an error. KMS being unreachable or the key being
// unusable at start is not an error: Status reports it until it is fixed. Run returns nil after a
// shutdown asked for by ctx.
func Run(ctx context.Context, opts Options) error {
	if opts.SocketPath == "" {
		return errors.New("kms plugin: a socket path is required")
	}
	if opts.Timeout < 0 || opts.ShutdownTimeout < 0 {
		return errors.New("kms plugin: timeouts must not be negative")
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	svc, err := NewService(opts.Client, opts.KeyID, opts.Service)
	if err != nil {
		return err
	}
	log := zerolog.Nop()
	if opts.Service.Logger != nil {
		log = *opts.Service.Logger
	}

	if err := svc.Refresh(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		log.Warn().Err(err).Msg("kms key is not usable yet; serving anyway, Status reports the problem")
	}

	ln, err := listenUnix(opts.SocketPath)
	if err != nil {
		return fmt.Errorf("kms plugin: %w", err)
	}
	var served service.Service = svc
	var watch func(ctx context.Context)
	if opts.Wrap != nil {
		served, watch = opts.Wrap(svc)
	}
	gs := grpc.NewServer(grpc.ConnectionTimeout(opts.Timeout))
	kmsapi.RegisterKeyManagementServiceServer(gs, service.NewGRPCService(opts.SocketPath, opts.Timeout, served))

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	var wg sync.WaitGroup
	wg.Go(func() { svc.Watch(watchCtx) })
	if watch != nil {
		wg.Go(func() { watch(watchCtx) })
	}
	serveErr := make(chan error, 1)
	wg.Go(func() { serveErr <- gs.Serve(ln) })

	log.Info().Str("socket", opts.SocketPath).Dur("status_interval", svc.opts.StatusInterval).
		Str("kms_key", kms.Redact(opts.KeyID)).Msg("kms v2 plugin serving")
	if opts.OnServing != nil {
		opts.OnServing()
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info().Msg("kms v2 plugin stopping")
		stopGracefully(gs, opts.ShutdownTimeout, log)
		<-serveErr
	case err := <-serveErr:
		gs.Stop()
		if err != nil {
			runErr = fmt.Errorf("kms plugin: serve %s: %w", opts.SocketPath, err)
		} else {
			runErr = fmt.Errorf("kms plugin: serve %s: server stopped", opts.SocketPath)
		}
	}
	stopWatch()
	wg.Wait()
	removeSocket(opts.SocketPath)
	if runErr == nil {
		log.Info().Msg("kms v2 plugin stopped")
	}
	return runErr
}

// stopGracefully lets running RPCs finish for up to timeout, then cancels them.
func stopGracefully(gs *grpc.Server, timeout time.Duration, log zerolog.Logger) {
	done := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		log.Warn().Dur("timeout", timeout).Msg("graceful stop timed out; cancelling running RPCs")
		gs.Stop()
		<-done
	}
}

// listenUnix listens on path with mode 0600, replacing a stale socket file.
func listenUnix(path string) (net.Listener, error) {
	abstract := strings.HasPrefix(path, "@")
	if !abstract {
		fi, err := os.Lstat(path)
		switch {
		case err == nil && fi.Mode()&fs.ModeSocket == 0:
			return nil, fmt.Errorf("socket path %s exists and is not a socket", path)
		case err == nil:
			if c, derr := net.DialTimeout("unix", path, liveSocketProbe); derr == nil {
				_ = c.Close()
				return nil, fmt.Errorf("socket path %s: another process is serving on it", path)
			}
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
			}
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("socket path %s: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if !abstract {
		if err := os.Chmod(path, socketMode); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("chmod socket %s: %w", path, err)
		}
	}
	return ln, nil
}

// removeSocket removes the socket file if closing the listener did not.
func removeSocket(path string) {
	if strings.HasPrefix(path, "@") {
		return
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSocket != 0 {
		_ = os.Remove(path)
	}
}
