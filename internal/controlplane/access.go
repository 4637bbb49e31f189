package controlplane

import (
	"context"
	"fmt"

	"path/filepath"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// URL is the API server's address, https://127.0.0.1:PORT. It does not change when the API
// server is restarted.
func (c *ControlPlane) URL() string { return "https://127.0.0.1:" + strconv.Itoa(c.apiPort) }

// EtcdURL is etcd's client address, http://127.0.0.1:PORT (no TLS, loopback only).
func (c *ControlPlane) EtcdURL() string { return "http://127.0.0.1:" + strconv.Itoa(c.etcdPort) }

// Dir is the working folder.
func (c *ControlPlane) Dir() string { return c.dir }

// AdminConfig returns a new rest.Config for the admin, a client certificate in system:masters.
// The certificate, key and CA are file paths. Client-side rate limits are raised above
// client-go's 5 QPS, which would otherwise slow tests' setup.
func (c *ControlPlane) AdminConfig() *rest.Config {
	return &rest.Config{
		Host: c.URL(),
		TLSClientConfig: rest.TLSClientConfig{
			CAFile:   c.pki.caFile,
			CertFile: c.pki.adminCert,
			KeyFile:  c.pki.adminKey,
		},
		QPS:   100,
		Burst: 200,
	}
}

// AdminKubeconfig is the path of a kubeconfig for the admin, DIR/admin.kubeconfig, naming its
// certificate and key by path rather than inline.
func (c *ControlPlane) AdminKubeconfig() string { return c.adminKubeconfig }

// CAFile is the PEM file of the cluster CA, which signs every serving and client certificate.
func (c *ControlPlane) CAFile() string { return c.pki.caFile }

// CAKeyFile is the CA's private key (PKCS #8 PEM), for tests that sign certificates themselves.
func (c *ControlPlane) CAKeyFile() string { return c.pki.caKeyFile }

// ServiceAccountKeyFile is the RSA private key (PKCS #8 PEM) that signs service account tokens.
func (c *ControlPlane) ServiceAccountKeyFile() string { return c.pki.saKeyFile }

// ServiceAccountPublicKeyFile is the public half of ServiceAccountKeyFile (PKIX PEM), which the
// API server verifies tokens with.
func (c *ControlPlane) ServiceAccountPublicKeyFile() string { return c.pki.saPublicKeyFile }

// ServiceAccountIssuer is the iss claim of service account tokens, and their default audience.
func (c *ControlPlane) ServiceAccountIssuer() string { return serviceAccountIssuer }

// IssueClientCert signs a client certificate for user in groups (CN=user, O=groups) by the
// cluster CA and writes it and its P-256 key to DIR/pki/clients/NAME.crt and NAME.key. Issuing
// the same name again replaces both files, each atomically (key first), which is how tests
// rotate an identity.
func (c *ControlPlane) IssueClientCert(name, user string, groups ...string) (certFile, keyFile string, err error) {
	certFile, keyFile, err = c.pki.issueClient(name, user, groups)
	if err != nil {
		return "", "", fmt.Errorf("issuing client certificate %q: %w", name, err)
	}
	return certFile, keyFile, nil
}

// WriteKubeconfig writes a kubeconfig at path (mode 0600) pointing at this API server, trusting
// the cluster CA and authenticating with certFile and keyFile, all by absolute path.
func (c *ControlPlane) WriteKubeconfig(path, certFile, keyFile string) error {
	var abs [2]string
	for i, f := range []string{certFile, keyFile} {
		a, err := filepath.Abs(f)
		if err != nil {
			return fmt.Errorf("writing kubeconfig %s: %w", path, err)
		}
		abs[i] = a
	}
	const name = "picogate-local"
	cfg := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{name: {Server: c.URL(), CertificateAuthority: c.pki.caFile}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{name: {ClientCertificate: abs[0], ClientKey: abs[1]}},
		Contexts:       map[string]*clientcmdapi.Context{name: {Cluster: name, AuthInfo: name}},
		CurrentContext: name,
	}
	if err := clientcmd.WriteToFile(cfg, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}

// LogFile is the path of component's log (Etcd, APIServer, Scheduler, ControllerManager). A
// restarted process appends to the same file, after a "==== ... starting" line.
func (c *ControlPlane) LogFile(component string) string {
	return filepath.Join(c.dir, "logs", component+".log")
}

// LogTail returns the last n lines of component's log, or a note saying why it cannot.
func (c *ControlPlane) LogTail(component string, n int) string {
	return tailFile(c.LogFile(component), n)
}

// waitDefaultServiceAccount waits for the controller manager to create the ServiceAccount
// "default" in namespace "default": until then the ServiceAccount admission plugin refuses pods
// there, and a test creating one right after Start would race.
func (c *ControlPlane) waitDefaultServiceAccount(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return fmt.Errorf("building admin client: %w", err)
	}
	c.mu.Lock()
	p := c.procs[ControllerManager]
	c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("waiting for ServiceAccount default/default: %s is not running", ControllerManager)
	}
	err = p.waitHealthy(ctx, c.cfg.StartTimeout, func(ctx context.Context) error {
		_, err := cs.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("waiting for ServiceAccount default/default: %w", err)
	}
	return nil
}
