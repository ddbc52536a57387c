// The etcd server for Steward's end-to-end tests against current Kubernetes,
// built from the Go module proxy by ../kubernetes-1.37.sh. This is the etcd
// command's own entry point (go.etcd.io/etcd/server/v3/etcdmain); it has a
// module of its own because etcd's client versions and Kubernetes' cannot
// share one module graph.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
