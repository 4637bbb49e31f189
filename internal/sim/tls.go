package sim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
)

// checkTLS matches the gateway URL's scheme and the pinned CA: an https:// gateway is the TLS port,
// which a board trusts through the CA it pins, and a CA for an http:// gateway would not be used.
func checkTLS(gateway string, cfg *tls.Config) error {
	u, err := url.Parse(gateway)
	if err != nil {
		return nil // reported with the URL
	}
	switch {
	case u.Scheme == "https" && cfg == nil:
		return fmt.Errorf("gateway %q: the TLS port needs the CA the boards pin (picosim --ca)", gateway)
	case u.Scheme != "https" && cfg != nil:
		return errors.New("tls: a pinned CA, but the gateway URL is not https://")
	}
	return nil
}

// deviceTLS is one board's TLS configuration: the fleet's, with a session cache of its own, as each
// board keeps its own session, and the name to check (the gateway's host unless one was given).
func deviceTLS(cfg *tls.Config, host string) *tls.Config {
	if cfg == nil {
		return nil
	}
	c := cfg.Clone()
	c.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	if c.ServerName == "" {
		c.ServerName = host
	}
	return c
}

// tlsDialer makes dial's connections TLS sessions with cfg, the handshake done within the dial's
// context, for the firmware mode's raw requests. It returns dial itself when cfg is nil.
func tlsDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error), cfg *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if cfg == nil {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		conn := tls.Client(raw, cfg)
		if err := conn.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		return conn, nil
	}
}
