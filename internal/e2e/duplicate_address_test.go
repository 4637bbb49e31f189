package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/gatewaytest"
)

// TestDuplicateAddressRefusesBoth: the README's promise through the real gateway and API server. Two
// ip-mode devices registered at one address are both refused (401), whichever way the address is
// spelled, and once one of them is removed the other is served.
func TestDuplicateAddressRefusesBoth(t *testing.T) {
	const addr = "127.0.0.51"
	gw := startGateway(t)
	status := func(path string) int { return firmwareDo(t, gw.Addr, addr, "GET", path, "", "", "").code }
	waitStatus := func(what, path string, want int) {
		t.Helper()
		if !gatewaytest.WaitFor(context.Background(), 10*time.Second, func() bool { return status(path) == want }) {
			t.Fatalf("%s: GET %s from %s: got %d, want %d within 10s", what, path, addr, status(path), want)
		}
	}
	addDevice(t, "dup-ip-1", "--auth", "ip", "--ip", addr)
	// Its own Node (absent: 404 from the API server) is allowed; another device's is not (403).
	waitStatus("dup-ip-1 alone", "/api/v1/nodes/dup-ip-1", 404)

	// The second claim spells the address as an IPv4-mapped IPv6 prefix: the same address.
	if cred := addDevice(t, "dup-ip-2", "--auth", "ip", "--ip", "::ffff:"+addr+"/128"); cred.Source != addr+"/32" {
		t.Errorf("device add --ip ::ffff:%s/128: got source %q, want %s/32", addr, cred.Source, addr)
	}
	waitStatus("two devices on one address", "/version", 401)
	for _, name := range []string{"dup-ip-1", "dup-ip-2"} {
		if got := status("/api/v1/nodes/" + name); got != 401 {
			t.Errorf("two devices on one address: GET node %s: got %d, want 401", name, got)
		}
	}

	picogate(t, "device", "remove", "dup-ip-1")
	waitStatus("dup-ip-1 removed", "/api/v1/nodes/dup-ip-2", 404)
	if got := status("/api/v1/nodes/dup-ip-1"); got != 403 {
		t.Errorf("dup-ip-1 removed: GET node dup-ip-1 as dup-ip-2: got %d, want 403", got)
	}
}
