// Package controlplane starts a real, local Kubernetes control plane (etcd, kube-apiserver and,
// on request, kube-scheduler and kube-controller-manager) on loopback, for picogate's integration
// tests and its demo.
//
// The API server runs with the flags k3s uses (--authorization-mode=Node,RBAC,
// --enable-admission-plugins=NodeRestriction), so what picogate does as an impersonated node is
// judged exactly as on a real cluster. kube-controller-manager keeps k3s's 50 s node-monitor grace
// period and, with Config.NodeIPAM, allocates node pod CIDRs as k3s's does (10.42.0.0/16, a /24 per
// node); tests that need speed or scarcity shorten or shrink these and say so. The binaries come
// from `make controlplane`; nothing is downloaded at run time. Every process runs in its own process group, logs to a file in the
// working folder, and dies with the control plane: on Stop, when Start's context is cancelled, and
// (on Linux) when the process that started it dies.
package controlplane
