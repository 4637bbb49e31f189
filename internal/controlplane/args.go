package controlplane

import (
	"fmt"
	"path/filepath"
	"strconv"
)

// serviceAccountIssuer is the issuer k3s and kubeadm use; --api-audiences defaults to it.
const serviceAccountIssuer = "https://kubernetes.default.svc"

func (c *ControlPlane) etcdArgs() []string {
	client := "http://127.0.0.1:" + strconv.Itoa(c.etcdPort)
	peer := "http://127.0.0.1:" + strconv.Itoa(c.etcdPeerPort)
	args := []string{
		"--name=default",
		"--data-dir=" + filepath.Join(c.dir, "etcd"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=default=" + peer,
	}
	if !c.cfg.Durable {
		args = append(args, "--unsafe-no-fsync=true")
	}
	return args
}

// apiServerArgs are k3s's authorization and admission settings plus what a loopback-only API
// server needs. The advertised address is loopback too, which Endpoints may not hold, so the
// endpoint reconciler is off: nothing here runs pods that would use the kubernetes Service.
func (c *ControlPlane) apiServerArgs() []string {
	p := c.pki
	args := []string{
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(c.etcdPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--secure-port=" + strconv.Itoa(c.apiPort),
		"--cert-dir=" + filepath.Join(c.dir, "apiserver"),
		"--tls-cert-file=" + p.serverCert,
		"--tls-private-key-file=" + p.serverKey,
		"--client-ca-file=" + p.caFile,
		"--service-account-key-file=" + p.saPublicKeyFile,
		"--service-account-signing-key-file=" + p.saKeyFile,
		"--service-account-issuer=" + serviceAccountIssuer,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--profiling=false",
	}
	return append(args, c.cfg.APIServerArgs...)
}

// componentArgs are the flags kube-scheduler and kube-controller-manager share: the admin
// kubeconfig for everything, and our CA-signed loopback certificate for their secure port, so
// their health can be checked against the cluster CA. They are given the client CA rather than
// looking it up in kube-system/extension-apiserver-authentication, which without a front proxy
// lacks the request-header CA they would otherwise complain about in their logs forever.
func (c *ControlPlane) componentArgs(name string, port int) []string {
	k := c.adminKubeconfig
	return []string{
		"--kubeconfig=" + k,
		"--authentication-kubeconfig=" + k,
		"--authorization-kubeconfig=" + k,
		"--authentication-skip-lookup=true",
		"--client-ca-file=" + c.pki.caFile,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(c.dir, name),
		"--tls-cert-file=" + c.pki.serverCert,
		"--tls-private-key-file=" + c.pki.serverKey,
		"--leader-elect=false",
		"--profiling=false",
	}
}

func (c *ControlPlane) schedulerArgs() []string {
	return c.componentArgs(Scheduler, c.schedulerPort)
}

// controllerManagerArgs are k3s's controller manager settings that matter to nodes (the grace
// period and, when asked, node IPAM) plus the keys and CA it signs with.
func (c *ControlPlane) controllerManagerArgs() []string {
	p := c.pki
	args := c.componentArgs(ControllerManager, c.controllerManagerPort)
	if c.cfg.NodeIPAM {
		args = append(args,
			"--allocate-node-cidrs=true",
			"--cluster-cidr="+c.cfg.ClusterCIDR,
			"--node-cidr-mask-size="+strconv.Itoa(c.cfg.NodeCIDRMaskSize),
		)
	}
	return append(args,
		"--service-account-private-key-file="+p.saKeyFile,
		"--root-ca-file="+p.caFile,
		"--cluster-signing-cert-file="+p.caFile,
		"--cluster-signing-key-file="+p.caKeyFile,
		"--use-service-account-credentials=false",
		fmt.Sprintf("--node-monitor-grace-period=%s", c.cfg.NodeMonitorGracePeriod),
	)
}
