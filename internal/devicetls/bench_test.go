package devicetls

import (
	"crypto/tls"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadCPU is the CPU time of the calling OS thread: with the goroutine locked to its thread, the
// goroutine's own CPU time, whatever else the process does.
func threadCPU(tb testing.TB) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ts.Nano())
}

// BenchmarkHandshake measures the gateway's CPU per handshake on the port's own configuration,
// full and resumed, TLS 1.2 as an mbedtls board does it and TLS 1.3 as Go clients do. ns/op counts
// both ends (client and server run in this process); server-µs/op is the server goroutine's CPU alone
// (its thread's CPU clock, the goroutine locked to it), the figure docs/tls.md gives.
func BenchmarkHandshake(b *testing.B) {
	f := newFixture(b)
	p, err := New(f.config())
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name    string
		version uint16
		suite   uint16
		curve   tls.CurveID
		resume  bool
	}{
		{"TLS1.2-full-X25519", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.X25519, false},
		{"TLS1.2-full-P256", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.CurveP256, false},
		{"TLS1.2-resumed", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.X25519, true},
		{"TLS1.3-full-X25519", tls.VersionTLS13, 0, tls.X25519, false},
		{"TLS1.3-resumed", tls.VersionTLS13, 0, tls.X25519, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := f.clientConfig(bc.version)
			cfg.CurvePreferences = []tls.CurveID{bc.curve}
			if bc.suite != 0 {
				cfg.CipherSuites = []uint16{bc.suite}
			}
			if !bc.resume {
				cfg.ClientSessionCache = nil
			}
			handshake(b, p.TLSConfig(), cfg, false) // fills the session cache when resuming
			var server time.Duration
			b.ResetTimer()
			for b.Loop() {
				server += handshake(b, p.TLSConfig(), cfg, bc.resume)
			}
			b.ReportMetric(float64(server.Microseconds())/float64(b.N), "server-µs/op")
		})
	}
}

// handshake runs one handshake over an in-memory pipe and returns the server's CPU time. The server
// then sends one byte, so that a TLS 1.3 client reads the session ticket that follows the handshake.
func handshake(b *testing.B, server, client *tls.Config, wantResumed bool) time.Duration {
	sc, cc := net.Pipe()
	done := make(chan time.Duration, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer sc.Close()
		start := threadCPU(b)
		conn := tls.Server(sc, server)
		err := conn.Handshake()
		cpu := threadCPU(b) - start
		if err == nil {
			_, err = conn.Write([]byte{'x'})
		}
		if err != nil {
			b.Error(err)
		}
		done <- cpu
	}()
	conn := tls.Client(cc, client)
	if err := conn.Handshake(); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		b.Fatal(err)
	}
	resumed := conn.ConnectionState().DidResume
	cc.Close()
	cpu := <-done
	if wantResumed && !resumed {
		b.Fatal("got a full handshake, want a resumed one")
	}
	return cpu
}
