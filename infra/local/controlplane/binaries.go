package controlplane

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// Binary file names, keyed by version, as infra/local/tools/build.sh writes them.
const (
	EtcdBinary          = "etcd-v3.7.3"
	KubeAPIServerBinary = "kube-apiserver-v1.37.2-rekey3"
)

// binDir returns where the binaries are: opts.BinDir, else $REKEY_BIN_DIR, else
// ${REKEY_CACHE:-$HOME/.cache/rekey}/bin.
func binDir(optsDir string) (string, error) {
	if optsDir != "" {
		return optsDir, nil
	}
	if d := os.Getenv("REKEY_BIN_DIR"); d != "" {
		return d, nil
	}
	cache := os.Getenv("REKEY_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find binary directory: set REKEY_BIN_DIR or REKEY_CACHE: %w", err)
		}
		cache = filepath.Join(home, ".cache", "rekey")
	}
	return filepath.Join(cache, "bin"), nil
}

// findBinary returns the path of name in dir, or an error that says which file is missing and
// how to build it.
func findBinary(dir, name string) (string, error) {
	path := filepath.Join(dir, name)
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("control-plane binary %s is missing: run \"make tools\" (infra/local/tools/build.sh) to build it: %w", path, err)
	case err != nil:
		return "", fmt.Errorf("control-plane binary %s: %w", path, err)
	case info.IsDir() || info.Mode().Perm()&0o111 == 0:
		return "", fmt.Errorf("control-plane binary %s is not an executable file: run \"make tools\" (infra/local/tools/build.sh) to rebuild it", path)
	}
	return path, nil
}

// freePorts returns n distinct loopback ports that were free a moment ago. Another process may
// take one before it is used; Start retries once when a bind fails.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
