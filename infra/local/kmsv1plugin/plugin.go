// Package kmsv1plugin is a KMS v1 plugin (the deprecated k8s.io/kms/apis/v1beta1
// KeyManagementService: Version, Encrypt, Decrypt) for the local twin. It models a cluster that
// still encrypts Secrets with KMS v1, as ACK clusters on 1.31+ may with the KMSv1 feature gate:
// every write asks the plugin to encrypt a fresh DEK under the key's primary version, and nothing
// ever tells the API server that a stored value is stale after a rotation.
//
// Encrypt returns the KMS CiphertextBlob (its base64 text, as Alibaba Cloud's KMS v1 plugin does),
// so the encrypted DEK stored in etcd names the key version that encrypted it.
package kmsv1plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kmsapi "k8s.io/kms/apis/v1beta1" // KMS v1 is deprecated upstream; this plugin exists to model it.

	"github.com/rekey-dev/rekey/shared/kms"
)

// APIVersion is the only KMS plugin API version the API server's KMS v1 client accepts.
const APIVersion = "v1beta1"

// RuntimeName is what Version reports as the plugin's runtime.
const RuntimeName = "rekey-local-kms-v1"

// Service implements the v1beta1 KeyManagementService over a KMS key.
type Service struct {
	kmsapi.UnimplementedKeyManagementServiceServer
	client kms.Client
	keyID  string
}

// NewService returns a service that encrypts under keyID's primary version with client.
func NewService(client kms.Client, keyID string) (*Service, error) {
	if client == nil || keyID == "" {
		return nil, errors.New("kms v1 plugin: a KMS client and a key ID are required")
	}
	return &Service{client: client, keyID: keyID}, nil
}

// Version reports the plugin API version.
func (s *Service) Version(_ context.Context, _ *kmsapi.VersionRequest) (*kmsapi.VersionResponse, error) {
	return &kmsapi.VersionResponse{Version: APIVersion, RuntimeName: RuntimeName, RuntimeVersion: "0.1.0"}, nil
}

// Encrypt encrypts a DEK under the key's primary version and returns the ciphertext blob.
func (s *Service) Encrypt(ctx context.Context, req *kmsapi.EncryptRequest) (*kmsapi.EncryptResponse, error) {
	if len(req.GetPlain()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "kms v1 plugin: empty plaintext")
	}
	r, err := s.client.Encrypt(ctx, s.keyID, req.GetPlain(), nil)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "kms v1 plugin: encrypt: %v", err)
	}
	return &kmsapi.EncryptResponse{Cipher: []byte(r.CiphertextBlob)}, nil
}

// Decrypt decrypts a blob returned by Encrypt (the blob names its key and version).
func (s *Service) Decrypt(ctx context.Context, req *kmsapi.DecryptRequest) (*kmsapi.DecryptResponse, error) {
	if len(req.GetCipher()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "kms v1 plugin: empty ciphertext")
	}
	r, err := s.client.Decrypt(ctx, string(req.GetCipher()), nil)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "kms v1 plugin: decrypt: %v", err)
	}
	return &kmsapi.DecryptResponse{Plain: r.Plaintext}, nil
}

// Plugin is a Service served on a unix socket.
type Plugin struct {
	// Socket is the unix socket path.
	Socket string

	srv  *grpc.Server
	done chan struct{}
	once sync.Once
}

// Serve listens on socket (a stale file there is removed) and serves svc until Stop.
func Serve(socket string, svc *Service) (*Plugin, error) {
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("kms v1 plugin: remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("kms v1 plugin: listen on %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("kms v1 plugin: chmod socket: %w", err)
	}
	p := &Plugin{Socket: socket, srv: grpc.NewServer(), done: make(chan struct{})}
	kmsapi.RegisterKeyManagementServiceServer(p.srv, svc)
	go func() {
		defer close(p.done)
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

// Stop stops serving (in-flight calls finish first) and removes the socket.
func (p *Plugin) Stop() {
	p.once.Do(func() {
		p.srv.GracefulStop()
		<-p.done
		_ = os.Remove(p.Socket)
	})
}
