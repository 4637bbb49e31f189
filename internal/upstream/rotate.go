package upstream

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// rotatingTransport carries requests with the client certificate currently in the kubeconfig's
// certificate and key files, and moves to a new certificate without failing a request: when the files
// change, a new transport is built for them and every new request takes it, while the old transport
// finishes what it carries (watches included) and is closed once idle.
//
// client-go has its own reload for these files, but on a change it closes every connection of the
// transport at once, which fails the requests in flight and cuts every watch; and it reads the two files
// separately, so it can pick up a new key with the old certificate halfway through a rotation. Here a
// pair is only used once the two files match.
type rotatingTransport struct {
	certFile, keyFile string
	interval          time.Duration
	build             func(cert, key []byte) (*http.Transport, error)
	log               *rotationLog

	cur       atomic.Pointer[generation]
	checking  atomic.Bool
	nextCheck atomic.Int64 // unix nanoseconds
	lastErr   atomic.Pointer[string]
}

// generation is one transport and the certificate files' contents it was built for.
type generation struct {
	rt        *http.Transport
	cert, key []byte
	active    atomic.Int64 // requests whose response body is not closed yet
	retired   atomic.Bool
}

// mismatchRetry is how soon the files are read again after they held a key and a certificate that do not
// belong together: the moment between a rotation's two writes.
const mismatchRetry = 200 * time.Millisecond

func newRotatingTransport(certFile, keyFile string, interval time.Duration, log *rotationLog, build func(cert, key []byte) (*http.Transport, error)) (*rotatingTransport, error) {
	t := &rotatingTransport{certFile: certFile, keyFile: keyFile, interval: interval, build: build, log: log}
	cert, key, err := t.readPair()
	if err != nil {
		return nil, err
	}
	log.inUse(cert, key)
	g, err := t.newGeneration(cert, key)
	if err != nil {
		return nil, err
	}
	t.cur.Store(g)
	t.nextCheck.Store(time.Now().Add(interval).UnixNano())
	return t, nil
}

// RoundTrip sends req on the current transport and keeps that transport open until the response body
// is closed.
func (t *rotatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.maybeCheck()
	g := t.cur.Load()
	g.active.Add(1)
	resp, err := g.rt.RoundTrip(req)
	if err != nil || resp.StatusCode == http.StatusSwitchingProtocols {
		g.release() // an upgraded connection leaves the pool: nothing to drain
		return resp, err
	}
	resp.Body = &trackedBody{ReadCloser: resp.Body, g: g}
	return resp, nil
}

// CloseIdleConnections closes the idle connections of every transport still open.
func (t *rotatingTransport) CloseIdleConnections() { t.cur.Load().rt.CloseIdleConnections() }

// maybeCheck starts a check of the files when one is due. It never delays the request: the check runs
// beside it, and at most one at a time.
func (t *rotatingTransport) maybeCheck() {
	if time.Now().UnixNano() < t.nextCheck.Load() || !t.checking.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer t.checking.Store(false)
		t.nextCheck.Store(time.Now().Add(t.check()).UnixNano())
	}()
}

// check reads the files and switches to them if they changed and form a valid pair. It returns when to
// check next.
func (t *rotatingTransport) check() time.Duration {
	cert, key, err := t.readPair()
	cur := t.cur.Load()
	if err == nil && bytes.Equal(cert, cur.cert) && bytes.Equal(key, cur.key) {
		t.lastErr.Store(nil)
		return t.interval
	}
	var g *generation
	if err == nil {
		g, err = t.newGeneration(cert, key)
	}
	if err != nil {
		// A rotation writes two files; between the writes they do not match. Try again shortly, keep
		// the certificate in use meanwhile, and say so only when the problem persists.
		msg := err.Error()
		if prev := t.lastErr.Swap(&msg); prev != nil && *prev == msg {
			t.log.log.Warn("client certificate files changed but cannot be used; keeping the certificate in use", "err", err)
			return t.interval
		}
		return mismatchRetry
	}
	t.lastErr.Store(nil)
	t.cur.Store(g)
	cur.retire()
	t.log.changed(t.certFile, cert, key)
	return t.interval
}

// rotationLog says once that the certificate changed, however many transports follow the same files:
// the HTTP/1.1 pool and the HTTP/2 transport of watches each switch at their own next request, and an
// operator reads of one rotation once.
type rotationLog struct {
	log  *slog.Logger
	mu   sync.Mutex
	last [sha256.Size]byte // the pair announced last, or in use from the start
}

func newRotationLog(log *slog.Logger) *rotationLog { return &rotationLog{log: log} }

func pairSum(cert, key []byte) [sha256.Size]byte {
	c, k := sha256.Sum256(cert), sha256.Sum256(key)
	return sha256.Sum256(append(c[:], k[:]...))
}

// inUse records the pair a transport starts with.
func (l *rotationLog) inUse(cert, key []byte) {
	l.mu.Lock()
	l.last = pairSum(cert, key)
	l.mu.Unlock()
}

// changed logs that new requests use cert and key, unless another transport has said so already.
func (l *rotationLog) changed(certFile string, cert, key []byte) {
	sum := pairSum(cert, key)
	l.mu.Lock()
	defer l.mu.Unlock()
	if sum == l.last {
		return
	}
	l.last = sum
	l.log.Info("client certificate changed: new requests use it, requests in flight finish on the old connections", "cert", certFile)
}

func (t *rotatingTransport) readPair() (cert, key []byte, err error) {
	if cert, err = os.ReadFile(t.certFile); err != nil {
		return nil, nil, fmt.Errorf("reading client certificate: %w", err)
	}
	if key, err = os.ReadFile(t.keyFile); err != nil {
		return nil, nil, fmt.Errorf("reading client key: %w", err)
	}
	return cert, key, nil
}

func (t *rotatingTransport) newGeneration(cert, key []byte) (*generation, error) {
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		return nil, fmt.Errorf("client certificate %s and key %s: %w", t.certFile, t.keyFile, err)
	}
	rt, err := t.build(cert, key)
	if err != nil {
		return nil, err
	}
	return &generation{rt: rt, cert: cert, key: key}, nil
}

// retire stops the generation taking new requests (the caller has already switched) and closes its
// connections as they become idle.
func (g *generation) retire() {
	g.retired.Store(true)
	g.rt.CloseIdleConnections()
}

// release ends one request of the generation. A retired generation closes its idle connections at every
// end, not only the last: a request that took the generation just before the switch reopens its pool
// (net/http stops closing returned connections once a request asks it for one), so the connection it hands
// back would otherwise stay open, idle under the old identity, for as long as another request (a watch)
// keeps the generation alive. After the last end it also makes the transport close, instead of pool, a
// connection handed back later.
func (g *generation) release() {
	g.active.Add(-1)
	if g.retired.Load() {
		g.rt.CloseIdleConnections()
	}
}

// trackedBody releases its generation once, when the body is closed.
type trackedBody struct {
	io.ReadCloser
	g    *generation
	once sync.Once
}

func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.g.release)
	return err
}
