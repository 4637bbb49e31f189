package setup

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/picogate/picogate/internal/devicetls"
)

// DefaultTLSDir is where `picogate setup --tls` writes the TLS device port's files, and where
// `picogate serve --tls-cert/--tls-key` look by default.
const DefaultTLSDir = "/etc/picogate/tls"

// The files of the TLS device port, by name within their folders.
const (
	CACertFile    = "ca.crt"     // the CA the firmware pins: public
	CAKeyFile     = "ca.key"     // signs leaves; the gateway never reads it
	LeafCertFile  = "tls.crt"    // the port's certificate, as a kubernetes.io/tls Secret names it
	LeafKeyFile   = "tls.key"    // its key
	TicketKeyFile = "ticket.key" // the seed of shared session ticket keys (serve --tls-ticket-key-file)
)

// TLSConfig says what `picogate setup --tls` issues. It touches no cluster.
type TLSConfig struct {
	// Dir receives the leaf, its key and the ticket key seed. Default DefaultTLSDir.
	Dir string
	// CADir holds the CA: reused when both of its files are there (so boards keep trusting the port
	// across leaf rotations), created otherwise. Default Dir. Keep it off the gateway's machine once
	// the leaf is issued: the gateway never needs the CA key.
	CADir string
	// SANs are the DNS names and IP addresses boards connect to. Required.
	SANs []string
	// Validity is the leaf's lifetime. Default devicetls.DefaultLeafValidity (2 years).
	Validity time.Duration
	// Owner, "user" or "user:group", owns the files the gateway reads (leaf, key, ticket key seed);
	// the CA's files keep the writer's. Empty keeps the writer's for all.
	Owner string
	// Now is the clock of the validity periods. Default time.Now.
	Now func() time.Time
}

// TLSResult is what IssueTLS did, for the operator.
type TLSResult struct {
	CACert, CAKey, Cert, Key, TicketKey string // the paths
	CACreated                           bool   // a new CA: boards must be given CACert
	TicketKeyCreated                    bool
	CAFingerprint                       string // SHA-256 of the CA certificate (DER), hex
	CANotAfter, NotAfter                time.Time
	SANs                                []string
}

// IssueTLS writes the TLS device port's files: the CA when there is none yet, a new ECDSA P-256 leaf
// signed by it for the SANs, and the ticket key seed when there is none. Running it again rotates the
// leaf and keeps the CA and the seed; a running gateway picks the new leaf up by itself. Each file is
// replaced atomically, the key before the certificate (the gateway keeps serving the previous pair
// until both match).
func IssueTLS(cfg TLSConfig) (*TLSResult, error) {
	if cfg.Dir == "" {
		cfg.Dir = DefaultTLSDir
	}
	if cfg.CADir == "" {
		cfg.CADir = cfg.Dir
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var errs []error
	if _, _, err := devicetls.ParseSANs(cfg.SANs); err != nil {
		errs = append(errs, fmt.Errorf("--tls-san: %w", err))
	}
	if cfg.Validity < 0 {
		errs = append(errs, fmt.Errorf("--tls-validity %s: want a positive duration", cfg.Validity))
	}
	o, err := parseOwner(cfg.Owner)
	if err != nil {
		errs = append(errs, err)
	}
	dir, derr := filepath.Abs(cfg.Dir)
	caDir, cerr := filepath.Abs(cfg.CADir)
	errs = append(errs, derr, cerr)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	res := &TLSResult{
		CACert: filepath.Join(caDir, CACertFile), CAKey: filepath.Join(caDir, CAKeyFile),
		Cert: filepath.Join(dir, LeafCertFile), Key: filepath.Join(dir, LeafKeyFile), TicketKey: filepath.Join(dir, TicketKeyFile),
		SANs: cfg.SANs,
	}
	for _, d := range []string{dir, caDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	ca, err := loadOrCreateCA(res, cfg.Now())
	if err != nil {
		return nil, err
	}
	leaf, err := devicetls.IssueLeaf(ca, cfg.SANs, cfg.Validity, cfg.Now())
	if err != nil {
		return nil, err
	}
	if err := writeAtomic(res.Key, leaf.Key, o); err != nil {
		return nil, err
	}
	if err := writeAtomic(res.Cert, leaf.Cert, o); err != nil {
		return nil, err
	}
	if res.TicketKeyCreated, err = ensureTicketKey(res.TicketKey, o); err != nil {
		return nil, err
	}
	caCert, err := firstCert(ca.Cert)
	if err != nil {
		return nil, err
	}
	cert, err := firstCert(leaf.Cert)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(caCert.Raw)
	res.CAFingerprint, res.CANotAfter, res.NotAfter = hex.EncodeToString(sum[:]), caCert.NotAfter, cert.NotAfter
	return res, nil
}

// loadOrCreateCA reuses the CA when both files exist, creates it when neither does, and refuses a
// half: a lone certificate or key means something went wrong, and replacing it would strand every
// board that pins the old CA.
func loadOrCreateCA(res *TLSResult, now time.Time) (devicetls.PEM, error) {
	certPEM, cerr := os.ReadFile(res.CACert)
	keyPEM, kerr := os.ReadFile(res.CAKey)
	switch {
	case cerr == nil && kerr == nil:
		return devicetls.PEM{Cert: certPEM, Key: keyPEM}, nil
	case errors.Is(cerr, os.ErrNotExist) && errors.Is(kerr, os.ErrNotExist):
	case cerr == nil || kerr == nil:
		return devicetls.PEM{}, fmt.Errorf("found one of %s and %s without the other: restore the missing one (boards pin this CA) or remove both to create a new CA", res.CACert, res.CAKey)
	default:
		return devicetls.PEM{}, errors.Join(cerr, kerr)
	}
	ca, err := devicetls.NewCA("picogate device CA", 0, now)
	if err != nil {
		return devicetls.PEM{}, err
	}
	// The CA's files keep the writer's ownership: the gateway's user needs neither.
	if err := writeAtomic(res.CAKey, ca.Key, owner{}); err != nil {
		return devicetls.PEM{}, err
	}
	if err := writeAtomic(res.CACert, ca.Cert, owner{}); err != nil {
		return devicetls.PEM{}, err
	}
	res.CACreated = true
	return ca, nil
}

// ensureTicketKey writes 32 random bytes, hex-encoded, unless the file exists: replacing it would end
// every board's session on every replica at once.
func ensureTicketKey(path string, o owner) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return false, fmt.Errorf("generating the ticket key seed: %w", err)
	}
	return true, writeAtomic(path, []byte(hex.EncodeToString(b[:])+"\n"), o)
}

func firstCert(p []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

// FormatFingerprint groups a hex fingerprint in colon-separated bytes, as openssl prints it.
func FormatFingerprint(h string) string {
	var parts []string
	for i := 0; i+2 <= len(h); i += 2 {
		parts = append(parts, strings.ToUpper(h[i:i+2]))
	}
	return strings.Join(parts, ":")
}
