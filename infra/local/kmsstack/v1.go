package kmsstack

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/rekey-dev/rekey/infra/local/controlplane"
	"github.com/rekey-dev/rekey/infra/local/kmsv1plugin"
)

// ProviderNameV1 is the KMS v1 provider name in the encryption config.
const ProviderNameV1 = "alibaba-kms-v1"

// StartKMSv1Plugin starts a KMS v1 plugin on a socket next to the KMS v2 plugin's, calling the KMS
// stand-in with the plugin's credential; Stop does not stop it: call the returned Plugin's Stop
// (before Stop, as a test cleanup registered after the stack's does). Give the control plane
// ProviderV1 and controlplane.KMSv1FeatureGate.
func (s *Stack) StartKMSv1Plugin() (*kmsv1plugin.Plugin, error) {
	client, err := s.Client(s.PluginCreds)
	if err != nil {
		return nil, err
	}
	svc, err := kmsv1plugin.NewService(client, s.KeyID)
	if err != nil {
		return nil, fmt.Errorf("kms stack: %w", err)
	}
	p, err := kmsv1plugin.Serve(filepath.Join(s.dir, "kms-v1.sock"), svc)
	if err != nil {
		return nil, fmt.Errorf("kms stack: %w", err)
	}
	return p, nil
}

// ProviderV1 is the encryption config entry for a KMS v1 plugin started by StartKMSv1Plugin.
func ProviderV1(p *kmsv1plugin.Plugin) controlplane.Provider {
	return controlplane.KMSv1(ProviderNameV1, "unix://"+p.Socket, 0, 3*time.Second)
}
