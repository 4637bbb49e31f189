package devicetls

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Listener wraps a TCP listener into the TLS device port. Its Accept returns connections whose
// handshake is done, so the HTTP server that serves them holds no connection before it is a device's
// TLS session. Before the handshake, each connection is checked against the source allowlist and
// closed if outside it, and waits for one of MaxHandshakes slots; the handshake then has
// HandshakeTimeout to finish. Closing the listener stops accepting and ends the handshakes in progress.
func (p *Port) Listener(ln net.Listener) net.Listener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{p: p, inner: ln, ready: make(chan net.Conn), done: make(chan struct{}), ctx: ctx, cancel: cancel}
	go l.acceptLoop()
	return l
}

type listener struct {
	p      *Port
	inner  net.Listener
	ready  chan net.Conn // finished handshakes, for Accept
	done   chan struct{} // closed when the accept loop has ended; err says why
	err    error
	ctx    context.Context // ends the handshakes in progress on Close
	cancel context.CancelFunc
	once   sync.Once
	wg     sync.WaitGroup // handshakes in progress
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

func (l *listener) Close() error {
	var err error
	l.once.Do(func() {
		l.cancel()
		err = l.inner.Close()
	})
	return err
}

func (l *listener) Addr() net.Addr { return l.inner.Addr() }

// acceptLoop accepts, checks the source, takes a handshake slot (waiting for one: the port stops
// accepting while all are taken) and hands the connection to a handshake goroutine.
func (l *listener) acceptLoop() {
	defer func() {
		l.wg.Wait()
		close(l.done)
	}()
	var backoff time.Duration
	for {
		raw, err := l.inner.Accept()
		if err != nil {
			if ne, ok := err.(interface{ Temporary() bool }); ok && ne.Temporary() && l.ctx.Err() == nil {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.p.log.Warn("TLS device port: accept failed, retrying", "err", err, "retry_in", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-l.ctx.Done():
				}
			}
			l.err = err
			if l.ctx.Err() != nil {
				l.err = net.ErrClosed
			}
			return
		}
		backoff = 0
		if !l.allowed(raw) {
			continue
		}
		if !l.takeSlot() {
			_ = raw.Close()
			l.err = net.ErrClosed
			return
		}
		l.wg.Add(1)
		go l.handshake(raw)
	}
}

// allowed applies the source allowlist to a new connection, closing it if refused: nothing of a
// client outside the allowlist is read, and no handshake work is done for it.
func (l *listener) allowed(raw net.Conn) bool {
	var addr netip.Addr
	if ta, ok := raw.RemoteAddr().(*net.TCPAddr); ok {
		addr = ta.AddrPort().Addr().Unmap()
	}
	if addr.IsValid() && l.p.cfg.Allowed(addr) {
		return true
	}
	_ = raw.Close()
	l.p.metrics.handshakes.WithLabelValues(ResultRefused).Inc()
	l.p.log.Debug("TLS device port: source address not allowed, closed before the handshake", "remote", raw.RemoteAddr().String())
	return false
}

// takeSlot waits for a handshake slot; false when the listener is closed meanwhile.
func (l *listener) takeSlot() bool {
	select {
	case l.p.slots <- struct{}{}:
		return true
	default:
	}
	l.p.metrics.waiting.Set(1)
	defer l.p.metrics.waiting.Set(0)
	select {
	case l.p.slots <- struct{}{}:
		return true
	case <-l.ctx.Done():
		return false
	}
}

// handshake runs one server handshake within the timeout, frees its slot, and hands a finished
// connection to Accept.
func (l *listener) handshake(raw net.Conn) {
	defer l.wg.Done()
	l.p.metrics.inFlight.Inc()
	conn := tls.Server(raw, l.p.tls)
	ctx, cancel := context.WithTimeout(l.ctx, l.p.cfg.HandshakeTimeout)
	err := conn.HandshakeContext(ctx)
	timedOut := errors.Is(ctx.Err(), context.DeadlineExceeded)
	cancel()
	l.p.metrics.inFlight.Dec()
	<-l.p.slots
	if err != nil {
		_ = raw.Close()
		result := ResultFailed
		if timedOut {
			result = ResultTimeout
		}
		l.p.metrics.handshakes.WithLabelValues(result).Inc()
		l.p.log.Debug("TLS device port: handshake "+result, "remote", raw.RemoteAddr().String(), "err", err)
		return
	}
	st := conn.ConnectionState()
	result := ResultFull
	if st.DidResume {
		result = ResultResumed
	}
	l.p.metrics.handshakes.WithLabelValues(result).Inc()
	c := &recordConn{Conn: conn, max: l.p.cfg.MaxRecordBytes}
	select {
	case l.ready <- c:
	case <-l.ctx.Done():
		_ = conn.Close()
	}
}

// recordConn is a finished TLS connection whose writes are cut into pieces of at most max bytes, so
// no application data record carries more: crypto/tls sends one record per write at most that long
// (its dynamic record sizing only makes early records smaller), and negotiates no record size with
// the client. The HTTP server sees it as a plain connection: the handshake is already done.
type recordConn struct {
	*tls.Conn
	max int
}

func (c *recordConn) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		k := min(len(b), c.max)
		m, err := c.Conn.Write(b[:k])
		n += m
		if err != nil {
			return n, err
		}
		b = b[k:]
	}
	return n, nil
}
