package gateway

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
)

// SourceAllowed reports whether a client at addr may use the gateway (--allow-cidr): the check every
// request on the device port passes first, for another port to make before it reads anything (the TLS
// port, before its handshake).
func (g *Gateway) SourceAllowed(addr netip.Addr) bool { return g.sourceAllowed(addr.Unmap()) }

// MetricsRegisterer registers another port's metrics beside the gateway's, on the admin port.
func (g *Gateway) MetricsRegisterer() prometheus.Registerer { return g.metrics.reg }
