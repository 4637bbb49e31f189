package devicetls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// certSource holds the device port's certificate, loaded from files and loaded again when they
// change. A pair that does not load (a key written before its certificate, a typo) never replaces a
// good one: the port keeps serving the last good pair and says why in the log, and the next change
// is tried again.
type certSource struct {
	certFile, keyFile string
	log               *slog.Logger
	metrics           *metrics

	mu      sync.RWMutex
	cur     *tls.Certificate
	stamps  [2]fileStamp // of the pair last tried, good or not
	lastErr error
}

// fileStamp tells whether a file changed: a Kubernetes Secret volume replaces its files through a
// symbolic link swap (a new inode), an editor or cp rewrites them in place (a new size or time).
type fileStamp struct {
	ino     uint64
	size    int64
	modTime time.Time
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	s := fileStamp{size: fi.Size(), modTime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = st.Ino
	}
	return s, nil
}

// load reads the pair for the first time: an error here is a configuration error.
func (s *certSource) load() error {
	stamps, err := s.stat()
	if err != nil {
		return err
	}
	cert, err := loadPair(s.certFile, s.keyFile)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cur, s.stamps = cert, stamps
	s.mu.Unlock()
	s.metrics.certLoaded(cert)
	return nil
}

// reload loads the pair again if either file changed since it was last tried, and reports whether
// the certificate served changed.
func (s *certSource) reload() (bool, error) {
	stamps, err := s.stat()
	if err != nil {
		return false, s.failed(err, fileStamp{}, fileStamp{})
	}
	s.mu.RLock()
	same := stamps == s.stamps
	s.mu.RUnlock()
	if same {
		return false, nil
	}
	cert, err := loadPair(s.certFile, s.keyFile)
	if err != nil {
		return false, s.failed(err, stamps[0], stamps[1])
	}
	s.mu.Lock()
	s.cur, s.stamps, s.lastErr = cert, stamps, nil
	s.mu.Unlock()
	s.metrics.certLoaded(cert)
	s.metrics.reloads.WithLabelValues("ok").Inc()
	s.log.Info("device port certificate reloaded", "cert", s.certFile, "subject", cert.Leaf.Subject.String(),
		"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339), "serial", cert.Leaf.SerialNumber.Text(16))
	return true, nil
}

// failed remembers the stamps of a pair that did not load, so it is not parsed again until it
// changes, and logs each new problem once.
func (s *certSource) failed(err error, cert, key fileStamp) error {
	s.mu.Lock()
	s.stamps = [2]fileStamp{cert, key}
	repeat := s.lastErr != nil && s.lastErr.Error() == err.Error()
	s.lastErr = err
	s.mu.Unlock()
	if !repeat {
		s.metrics.reloads.WithLabelValues("error").Inc()
		s.log.Warn("device port certificate not reloaded: serving the previous one", "err", err)
	}
	return err
}

func (s *certSource) stat() ([2]fileStamp, error) {
	c, err := stampOf(s.certFile)
	if err != nil {
		return [2]fileStamp{}, fmt.Errorf("--tls-cert: %w", err)
	}
	k, err := stampOf(s.keyFile)
	if err != nil {
		return [2]fileStamp{}, fmt.Errorf("--tls-key: %w", err)
	}
	return [2]fileStamp{c, k}, nil
}

// get is tls.Config.GetCertificate: the current pair, whatever the client asked for (a board's SNI
// is whatever name it pins, and the certificate is the same for all).
func (s *certSource) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur, nil
}

// loadPair reads and checks a certificate and key: they must match, and the key must be ECDSA P-256,
// since boards verify ECDSA and the TLS 1.2 suites offered are ECDHE-ECDSA.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading %s and %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil {
		return nil, fmt.Errorf("%s: no certificate", certFile)
	}
	pub, ok := cert.Leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s: a %s key; the device port needs ECDSA P-256 (boards verify ECDSA, and the TLS 1.2 suites are ECDHE-ECDSA)", certFile, keyKind(cert.Leaf.PublicKey))
	}
	if len(cert.Leaf.DNSNames) == 0 && len(cert.Leaf.IPAddresses) == 0 {
		return nil, fmt.Errorf("%s: no subject alternative names; boards check the name they connect to against them", certFile)
	}
	return &cert, nil
}

func keyKind(pub any) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	default:
		return fmt.Sprintf("%T", pub)
	}
}
