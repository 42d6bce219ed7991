// Command kube-apiserver is kube-apiserver v1.37.2 built from the Go module proxy for rekey's local
// control plane.
//
// Two test knobs, both ones upstream's own integration tests use:
//
//   - REKEY_ENCRYPTION_RELOAD_INTERVAL (a Go duration) sets how often
//     --encryption-provider-config-automatic-reload polls the file (upstream default: one minute).
//   - REKEY_APISERVER_HOSTNAME replaces the host name the API server derives its identity from
//     (APIServerID: the identity Lease in kube-system and the apiserver_id_hash metrics label), so
//     that several replicas on one host have distinct identities, as on distinct machines.
package main

import (
	"fmt"
	"os"
	"time"

	genericapiserver "k8s.io/apiserver/pkg/server"
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
	if v := os.Getenv("REKEY_APISERVER_HOSTNAME"); v != "" {
		genericapiserver.SetHostnameFuncForTests(v)
	}
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
