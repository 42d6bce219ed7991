// Command etcd is etcd v3.7.3 built from the Go module proxy for rekey's local control plane.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
