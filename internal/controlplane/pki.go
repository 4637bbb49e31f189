package controlplane

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"
)

// certValidity is long enough for a demo left running for a while; tests that need expiry
// issue their own certificates.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	certValidity = 365 * 24 * time.Hour
)

// pki is the control plane's certificate authority and the files made from it. Every key is
// written with mode 0600.
type pki struct {
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	mu     sync.Mutex // serialises writes of one name's pair, so cert and key match

	caFile, caKeyFile          string
	serverCert, serverKey      string
	adminCert, adminKey        string
	saKeyFile, saPublicKeyFile string
}

// newPKI makes a fresh CA in dir, the serving certificate shared by all three servers, the
// admin's client certificate and the service-account key pair.
func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating pki folder: %w", err)
	}
	p := &pki{dir: dir}
	if err := p.makeCA(); err != nil {
		return nil, fmt.Errorf("creating CA: %w", err)
	}
	var err error
	p.serverCert, p.serverKey, err = p.issue("server", &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("creating serving certificate: %w", err)
	}
	p.adminCert, p.adminKey, err = p.issue("admin", clientTemplate("admin", []string{"system:masters"}))
	if err != nil {
		return nil, fmt.Errorf("creating admin certificate: %w", err)
	}
	if err := p.makeServiceAccountKeys(); err != nil {
		return nil, fmt.Errorf("creating service account keys: %w", err)
	}
	return p, nil
}

func (p *pki) makeCA() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "picogate-controlplane-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return err
	}
	if p.caCert, err = x509.ParseCertificate(der); err != nil {
		return err
	}
	p.caKey = key
	p.caFile, p.caKeyFile = filepath.Join(p.dir, "ca.crt"), filepath.Join(p.dir, "ca.key")
	if err := writePEM(p.caFile, "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	return writeKey(p.caKeyFile, key)
}

func (p *pki) makeServiceAccountKeys() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	p.saKeyFile, p.saPublicKeyFile = filepath.Join(p.dir, "sa.key"), filepath.Join(p.dir, "sa.pub")
	if err := writeKey(p.saKeyFile, key); err != nil {
		return err
	}
	return writePEM(p.saPublicKeyFile, "PUBLIC KEY", pub, 0o644)
}

// clientTemplate is a client certificate for user in groups, the way kube-apiserver reads them:
// CN is the user name, each O a group.
func clientTemplate(user string, groups []string) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

// validFileName keeps IssueClientCert's files inside the pki folder.
var validFileName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// issue signs tmpl (with a fresh P-256 key) by the CA and writes NAME.crt and NAME.key in the
// pki folder.
func (p *pki) issue(name string, tmpl *x509.Certificate) (certFile, keyFile string, err error) {
	return p.issueIn(p.dir, name, tmpl)
}

// issueClient is issue for callers' identities, kept in a folder of their own so that no name
// can overwrite the CA, the serving certificate or the admin's.
func (p *pki) issueClient(name, user string, groups []string) (certFile, keyFile string, err error) {
	dir := filepath.Join(p.dir, "clients")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	return p.issueIn(dir, name, clientTemplate(user, groups))
}

func (p *pki) issueIn(dir, name string, tmpl *x509.Certificate) (certFile, keyFile string, err error) {
	if !validFileName.MatchString(name) {
		return "", "", fmt.Errorf("certificate name %q: want letters, digits, '.', '_' or '-'", name)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	if tmpl.SerialNumber, err = randomSerial(); err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(certValidity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, key.Public(), p.caKey)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := writeKey(keyFile, key); err != nil {
		return "", "", err
	}
	if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func writeKey(path string, key crypto.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

// writePEM replaces path atomically, so a client re-reading a rotated file never sees half of it.
func writePEM(path, blockType string, der []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := pem.Encode(tmp, &pem.Block{Type: blockType, Bytes: der}); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
