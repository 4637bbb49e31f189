package enroll

import (
	"net/netip"
	"testing"
	"time"
)

// TestSourceLimitsPerSource: 30 junk requests from one address spend that address's budget only; a
// board at another address still enrolls. The global bound still holds across many addresses.
func TestSourceLimitsPerSource(t *testing.T) {
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	l := newSourceLimits(10, 20, 5, 10, 4096)
	junk, board := netip.MustParseAddr("192.168.1.66"), netip.MustParseAddr("192.168.1.52")
	allowed := 0
	for range 30 {
		if l.allow(junk, now) {
			allowed++
		}
	}
	if allowed != 10 {
		t.Errorf("30 requests from one address at once: got %d allowed, want its burst of 10", allowed)
	}
	if !l.allow(board, now) {
		t.Error("a board at another address after the junk: got refused, want allowed")
	}
	// Many addresses at once: the global burst of 20 is the bound (the 11 above included).
	total := 11
	for i := range 100 {
		if l.allow(netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i)}), now) {
			total++
		}
	}
	if total != 20 {
		t.Errorf("requests from 102 addresses at once: got %d allowed, want the global burst of 20", total)
	}
}

// TestSourceLimitsBounded: the table never holds more than its maximum; sources whose budget is whole
// again are forgotten to make room (at most once a second), and until then a new source is refused.
func TestSourceLimitsBounded(t *testing.T) {
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	l := newSourceLimits(1000, 1000, 1, 5, 8)
	for i := range 8 {
		if !l.allow(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), now) {
			t.Fatalf("source %d of 8: refused", i)
		}
	}
	stranger := netip.MustParseAddr("10.0.1.1")
	if l.allow(stranger, now) {
		t.Error("a ninth source while eight are busy: got allowed, want refused (the table is full)")
	}
	if got := l.sources(); got != 8 {
		t.Errorf("tracked sources: got %d, want 8", got)
	}
	later := now.Add(5 * time.Second) // every budget is whole again
	if !l.allow(stranger, later) {
		t.Error("a new source once the others are idle: got refused, want allowed")
	}
	if got := l.sources(); got != 1 {
		t.Errorf("tracked sources after the sweep: got %d, want 1", got)
	}
}

// TestSourceKey: IPv6 sources share a budget per /64; IPv4-mapped addresses are their IPv4 address.
func TestSourceKey(t *testing.T) {
	tests := []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"},
		{"::ffff:192.168.1.5", "192.168.1.5"},
	}
	for _, tt := range tests {
		t.Run(tt.a, func(t *testing.T) {
			if ka, kb := sourceKey(netip.MustParseAddr(tt.a)), sourceKey(netip.MustParseAddr(tt.b)); ka != kb {
				t.Errorf("got %v and %v, want one key", ka, kb)
			}
		})
	}
	if sourceKey(netip.MustParseAddr("2001:db8:1:2::1")) == sourceKey(netip.MustParseAddr("2001:db8:1:3::1")) {
		t.Error("two /64s: got one key, want two")
	}
}
