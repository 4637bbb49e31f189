package device

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
)

// PinnedTLS is the TLS configuration of a board that talks to the gateway's TLS port (`picogate serve
// --tls-listen`): it trusts only caPEM, the CA `picogate setup --tls` created, checks the gateway's
// certificate for serverName (empty: the host of the Gateway URL), and keeps sessions, so that after
// the first connection a board resumes instead of doing the public-key work again. Set it as
// Config.TLS or ClientConfig.TLS with an https:// Gateway.
func PinnedTLS(caPEM []byte, serverName string) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("pinned CA: no PEM certificate")
	}
	return &tls.Config{
		RootCAs:            pool,
		ServerName:         serverName,
		MinVersion:         tls.VersionTLS12,
		ClientSessionCache: tls.NewLRUClientSessionCache(4),
	}, nil
}

// checkTLS refuses a TLS configuration that would not be used.
func checkTLS(gateway string, cfg *tls.Config, custom bool) error {
	switch {
	case cfg != nil && custom:
		return errors.New("tls: only used without HTTPClient (set it in the client's transport)")
	case cfg != nil && !strings.HasPrefix(gateway, "https://"):
		return errors.New("tls: set, but the gateway URL is not https://")
	}
	return nil
}
