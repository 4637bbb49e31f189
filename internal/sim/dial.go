package sim

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// dialer returns a dial function that connects from src when it is valid:
// every 127.0.0.0/8 address is loopback on Linux, so one machine can play
// many ip-mode devices, each recognised by its own source address.
func dialer(src netip.Addr, timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	return d.DialContext
}
