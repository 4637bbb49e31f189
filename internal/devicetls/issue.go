package devicetls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// Validity defaults of the certificates Issue writes. The CA lives as long as the boards that pin it;
// the leaf is replaced (with the same CA) well before it ends.
const (
	DefaultCAValidity   = 20 * 365 * 24 * time.Hour
	DefaultLeafValidity = 2 * 365 * 24 * time.Hour
)

// PEM is a certificate and its private key, PEM-encoded (the key as SEC 1 "EC PRIVATE KEY", which Go
// and mbedtls both read).
type PEM struct {
	Cert, Key []byte
}

// NewCA creates the certificate authority the firmware pins: an ECDSA P-256 self-signed certificate
// that may sign leaf certificates and nothing below them (path length 0), so the chain a board checks
// is always one link long.
func NewCA(commonName string, validity time.Duration, now time.Time) (PEM, error) {
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PEM{}, fmt.Errorf("generating the CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return PEM{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return PEM{}, fmt.Errorf("signing the CA certificate: %w", err)
	}
	return encode(der, key)
}

// IssueLeaf signs the device port's certificate with the CA: ECDSA P-256, for server authentication,
// valid for the given names (DNS names or IP addresses). It is kept small, since a board receives it
// on every full handshake: no chain beyond itself, a short subject, the SANs and the usual key usages.
func IssueLeaf(ca PEM, sans []string, validity time.Duration, now time.Time) (PEM, error) {
	if validity <= 0 {
		validity = DefaultLeafValidity
	}
	caCert, caKey, err := parseCA(ca)
	if err != nil {
		return PEM{}, err
	}
	dns, ips, err := ParseSANs(sans)
	if err != nil {
		return PEM{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PEM{}, fmt.Errorf("generating the device port key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return PEM{}, err
	}
	cn := "picogate"
	if len(dns) > 0 && len(dns[0]) <= 64 {
		cn = dns[0]
	}
	notAfter := now.Add(validity)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return PEM{}, fmt.Errorf("signing the device port certificate: %w", err)
	}
	return encode(der, key)
}

// ParseSANs splits subject alternative names into DNS names and IP addresses, refusing what is
// neither and an empty list.
func ParseSANs(sans []string) (dns []string, ips []net.IP, err error) {
	var errs []error
	for _, s := range sans {
		s = strings.TrimSpace(s)
		switch {
		case s == "":
			errs = append(errs, errors.New("an empty name"))
		case net.ParseIP(s) != nil:
			ips = append(ips, net.ParseIP(s))
		case validDNSName(s):
			dns = append(dns, strings.ToLower(s))
		default:
			errs = append(errs, fmt.Errorf("%q is neither a DNS name nor an IP address", s))
		}
	}
	if len(sans) == 0 {
		errs = append(errs, errors.New("no names: give the DNS names and addresses boards connect to"))
	}
	return dns, ips, errors.Join(errs...)
}

// validDNSName accepts host names of letters, digits and hyphens in dot-separated labels, and a
// leading "*." wildcard.
func validDNSName(s string) bool {
	s = strings.TrimPrefix(s, "*.")
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func parseCA(ca PEM) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, _ := pem.Decode(ca.Cert)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, nil, errors.New("CA certificate: no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, nil, errors.New("CA certificate: not a CA (basic constraints)")
	}
	kb, _ := pem.Decode(ca.Key)
	if kb == nil {
		return nil, nil, errors.New("CA key: no PEM block")
	}
	key, err := parseECKey(kb)
	if err != nil {
		return nil, nil, fmt.Errorf("CA key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, errors.New("CA key: does not match the CA certificate")
	}
	return cert, key, nil
}

func parseECKey(b *pem.Block) (*ecdsa.PrivateKey, error) {
	switch b.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(b.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, err
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("a %T, want ECDSA", k)
		}
		return ec, nil
	default:
		return nil, fmt.Errorf("PEM block %q, want EC PRIVATE KEY or PRIVATE KEY", b.Type)
	}
}

func encode(der []byte, key *ecdsa.PrivateKey) (PEM, error) {
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return PEM{}, fmt.Errorf("encoding the key: %w", err)
	}
	return PEM{
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}, nil
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("choosing a serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
