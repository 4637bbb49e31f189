package serve

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/picogate/picogate/internal/devicetls"
	"github.com/picogate/picogate/internal/gateway"
)

// buildTLS builds the TLS device port when --tls-listen is set: the gateway's handler behind TLS, with
// the gateway's source allowlist applied before the handshake and its metrics beside the gateway's.
// It returns nils when the port is off.
func buildTLS(cfg devicetls.Config, gw *gateway.Gateway, log *slog.Logger) (*devicetls.Port, net.Listener, error) {
	if cfg.Listen == "" || gw == nil {
		return nil, nil, nil
	}
	cfg.Allowed, cfg.Registerer, cfg.Logger = gw.SourceAllowed, gw.MetricsRegisterer(), log
	port, err := devicetls.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("TLS device port: %w", err)
	}
	return port, port.Listener(ln), nil
}
