package kmsstack

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"k8s.io/kms/pkg/service"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/shared/kmsplugin"
)

// pluginInstance is one running KMS v2 plugin: its own kmsplugin.Service (own KMS client, own
// Watch/Status loop) wrapped in an ACKPlugin, served on its own socket. The instances run in this
// process, but share nothing but the KMS API, as separate plugin processes next to separate
// kube-apiservers would.
type pluginInstance struct {
	socket string
	plugin *ACKPlugin
	stop   func()
}

// socketPath is plugin instance i's socket: kms.sock for the first (as before instances existed),
// kms-<i>.sock for the others.
func (s *Stack) socketPath(i int) string {
	if i == 0 {
		return filepath.Join(s.dir, "kms.sock")
	}
	return filepath.Join(s.dir, "kms-"+strconv.Itoa(i)+".sock")
}

// startPlugin starts plugin instance i (kmsplugin.Run, serving the ACKPlugin that wraps its
// Service) and returns once it serves on its socket.
func (s *Stack) startPlugin(ctx context.Context, i int) (*pluginInstance, error) {
	po := s.opts.Plugins[i]
	client, err := s.Client(s.PluginCreds)
	if err != nil {
		return nil, fmt.Errorf("kms stack: plugin instance %d: %w", i, err)
	}
	socket := s.socketPath(i)
	inst := &pluginInstance{socket: socket}
	var wrapErr error
	wrap := func(inner *kmsplugin.Service) (service.Service, func(context.Context)) {
		ack, err := NewACKPlugin(inner, s.KeyID, ACKPluginOptions{KeyIDFormat: po.KeyIDFormat, AdoptAfter: po.AdoptAfter})
		if err != nil {
			wrapErr = err
			return inner, nil
		}
		inst.plugin = ack
		return ack, func(ctx context.Context) { ack.Watch(ctx, po.StatusInterval) }
	}
	pctx, cancel := context.WithCancel(context.Background())
	serving := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- kmsplugin.Run(pctx, kmsplugin.Options{SocketPath: socket, Client: client, KeyID: s.KeyID, Wrap: wrap,
			Service:   kmsplugin.ServiceOptions{StatusInterval: po.StatusInterval, Logger: s.pluginLogger(i)},
			OnServing: func() { close(serving) }})
	}()
	select {
	case <-serving:
		if wrapErr != nil {
			cancel()
			<-done
			return nil, fmt.Errorf("kms stack: plugin instance %d: %w", i, wrapErr)
		}
		var once sync.Once
		inst.stop = func() { once.Do(func() { cancel(); <-done }) }
		return inst, nil
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("kms stack: plugin instance %d: %w", i, err)
	case <-ctx.Done():
		cancel()
		<-done
		return nil, fmt.Errorf("kms stack: plugin instance %d did not start: %w", i, ctx.Err())
	}
}

// instance is plugin instance i; it panics when there is none (a test bug).
func (s *Stack) instance(i int) *pluginInstance {
	if i < 0 || i >= len(s.plugins) {
		panic(fmt.Sprintf("kms stack: no plugin instance %d (the stack has %d)", i, len(s.plugins)))
	}
	return s.plugins[i]
}

// Provider is the encryption config entry for the first plugin instance.
func (s *Stack) Provider() controlplane.Provider {
	return s.Providers()[0]
}

// Providers are the encryption config entries for the plugin instances, in Options.Plugins order:
// one per kube-apiserver. They share the provider name ProviderName, as the API servers of one
// cluster must, to read each other's writes.
func (s *Stack) Providers() []controlplane.Provider {
	out := make([]controlplane.Provider, 0, len(s.plugins))
	for _, p := range s.plugins {
		out = append(out, controlplane.KMSv2(ProviderName, "unix://"+p.socket, 3*time.Second))
	}
	return out
}

// Sockets are the plugin instances' unix socket paths, in Options.Plugins order (Socket is the
// first).
func (s *Stack) Sockets() []string {
	out := make([]string, 0, len(s.plugins))
	for _, p := range s.plugins {
		out = append(out, p.socket)
	}
	return out
}

// FreezeStatus holds plugin instance i's Status on the key_id it reports now (frozen), so that its
// API server keeps writing under that key version whatever KMS's primary is, or lets it follow
// KMS again (ACKPlugin.Freeze). It panics when there is no instance i.
func (s *Stack) FreezeStatus(i int, frozen bool) {
	s.instance(i).plugin.Freeze(frozen)
}

// KeyIDFor is the KMS v2 key_id plugin instance i reports and writes for the key version version:
// version itself, or an opaque string with KeyIDOpaque. Stored EncryptedObjects written through
// instance i carry it. It panics when there is no instance i.
func (s *Stack) KeyIDFor(i int, version string) string {
	return s.instance(i).plugin.KeyIDFor(version)
}
