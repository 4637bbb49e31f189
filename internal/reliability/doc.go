// Package reliability holds picogate's fault-injection tests: the real picogate binary against a real
// kube-apiserver and etcd, under load from the fleet simulator (internal/sim), while the API server is
// killed, the gateway's client certificate is replaced, the gateway restarts, the device registry cannot
// be read, clients are slow or idle by the thousand, and the upstream misbehaves. The package has no
// code of its own; everything is in its tests. The long soak runs with `-tags soak` (make soak); the
// figures of the last run are in docs/reliability.md.
package reliability
