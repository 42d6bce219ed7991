// Command kube-apiserver is kube-apiserver v1.37.2 built from the Go module proxy for rekey's local
// control plane.
//
// One test knob, the one upstream's own integration tests use: REKEY_ENCRYPTION_RELOAD_INTERVAL
// (a Go duration) sets how often --encryption-provider-config-automatic-reload polls the file
// (upstream default: one minute).
package main

import (
	"fmt"
	"os"
	"time"

	"k8s.io/apiserver/pkg/server/options/encryptionconfig/controller"
	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	if v := os.Getenv("REKEY_ENCRYPTION_RELOAD_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			fmt.Fprintf(os.Stderr, "REKEY_ENCRYPTION_RELOAD_INTERVAL=%q: want a positive duration\n", v)
			os.Exit(2)
		}
		controller.EncryptionConfigFileChangePollDuration = d
	}
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
