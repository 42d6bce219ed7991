// Command kube-apiserver is kube-apiserver v1.37.2 built from the Go module proxy for rekey's local
// control plane.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
