package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Endpoint is where a target listens, as the load generator dials it.
type Endpoint struct {
	Addr string      // host:port
	TLS  *tls.Config // nil for plain HTTP
	Host string      // Host header
}

// requestFunc returns connection conn's request bytes for the wall-clock second sec. The load generator
// asks again only when the second changes, so a request is built about once a second, not per request.
type requestFunc func(conn int, sec int64) []byte

// loadSpec is one window of closed-loop load: Conns connections, each sending its next request as soon
// as the previous answer is read.
type loadSpec struct {
	Endpoint Endpoint
	Conns    int
	Close    bool // a new connection per request (the firmware's pattern), else kept alive
	Warmup   time.Duration
	Duration time.Duration
	Request  requestFunc
	// Window is called when the measured window opens and again after the last request has ended, so
	// the caller can read /proc at exactly the window's bounds.
	Window func(open bool)
}

// loadResult is what one window measured.
type loadResult struct {
	Requests  int64            // answered with a status below 400, in the window
	Errors    map[string]int64 // by kind: "status 503", "io", ...
	Bytes     int64            // response bytes of the counted requests
	Elapsed   time.Duration
	Latencies []time.Duration
}

// runLoad runs one window. The request in flight when the window closes is waited for and counted, so
// the proxy's CPU read afterwards covers exactly the requests counted.
func runLoad(ctx context.Context, spec loadSpec) loadResult {
	var recording, stopping atomic.Bool
	workers := make([]*loadConn, spec.Conns)
	var wg sync.WaitGroup
	for i := range workers {
		w := &loadConn{spec: &spec, id: i, errs: map[string]int64{}, lat: make([]time.Duration, 0, 8192)}
		workers[i] = w
		wg.Go(func() { w.run(ctx, &recording, &stopping) })
	}
	sleepCtx(ctx, spec.Warmup)
	if spec.Window != nil {
		spec.Window(true)
	}
	recording.Store(true)
	began := time.Now()
	sleepCtx(ctx, spec.Duration)
	stopping.Store(true)
	wg.Wait()
	res := loadResult{Elapsed: time.Since(began), Errors: map[string]int64{}}
	if spec.Window != nil {
		spec.Window(false)
	}
	for _, w := range workers {
		res.Requests += w.ok
		res.Bytes += w.bytes
		res.Latencies = append(res.Latencies, w.lat...)
		for k, v := range w.errs {
			res.Errors[k] += v
		}
	}
	return res
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// loadConn is one connection's loop and counters; only its own goroutine touches them until run returns.
type loadConn struct {
	spec  *loadSpec
	id    int
	conn  net.Conn
	br    *bufio.Reader
	sec   int64
	req   []byte
	ok    int64
	bytes int64
	errs  map[string]int64
	lat   []time.Duration
}

func (w *loadConn) run(ctx context.Context, recording, stopping *atomic.Bool) {
	defer w.hangUp()
	for !stopping.Load() && ctx.Err() == nil {
		start := time.Now()
		if sec := start.Unix(); sec != w.sec || w.req == nil {
			w.sec, w.req = sec, w.spec.Request(w.id, sec)
		}
		resp, err := w.roundTrip(start)
		if !recording.Load() {
			continue
		}
		switch {
		case err != nil:
			w.errs[errKind(err)]++
			time.Sleep(5 * time.Millisecond) // a refusing target must not become a busy loop
		case resp.status >= 400:
			w.errs["status "+strconv.Itoa(resp.status)]++
		default:
			w.ok++
			w.bytes += resp.bytes
			w.lat = append(w.lat, time.Since(start))
		}
	}
}

// roundTrip sends the request on the open connection (dialling first if there is none) and reads the
// answer. The connection is closed after it when the workload or the server says so.
func (w *loadConn) roundTrip(start time.Time) (response, error) {
	if w.conn == nil {
		if err := w.dial(); err != nil {
			return response{}, err
		}
	}
	_ = w.conn.SetDeadline(start.Add(15 * time.Second))
	if _, err := w.conn.Write(w.req); err != nil {
		w.hangUp()
		return response{}, fmt.Errorf("writing request: %w", err)
	}
	resp, err := readResponse(w.br)
	if err != nil || resp.close || w.spec.Close {
		w.hangUp()
	}
	return resp, err
}

func (w *loadConn) dial() error {
	ep := w.spec.Endpoint
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: sourceIP(w.id)}}
	c, err := d.Dial("tcp", ep.Addr)
	if err != nil {
		return fmt.Errorf("dialling %s: %w", ep.Addr, err)
	}
	if ep.TLS != nil {
		tc := tls.Client(c, ep.TLS)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			c.Close()
			return fmt.Errorf("TLS handshake with %s: %w", ep.Addr, err)
		}
		c = tc
	}
	w.conn = c
	if w.br == nil {
		w.br = bufio.NewReaderSize(c, 32<<10)
	} else {
		w.br.Reset(c)
	}
	return nil
}

// sourceIP is connection conn's own loopback address, 127.77.X.Y. Devices come from addresses of their
// own; more to the point, thousands of new connections a second from one address to one port reuse
// 4-tuples still in TIME_WAIT, and the SYN then stalls for a second's retransmit. That would measure
// the load generator's port reuse, not the proxy.
func sourceIP(conn int) net.IP {
	return net.IPv4(127, 77, byte(conn/250), byte(conn%250+1))
}

func (w *loadConn) hangUp() {
	if w.conn != nil {
		_ = w.conn.Close()
		w.conn = nil
	}
}

// errKind is a small, bounded label for a transport error.
func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, errMalformed):
		return "malformed response"
	default:
		return "connection error"
	}
}
