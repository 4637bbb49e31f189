package gateway

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/picogate/picogate/internal/compact"
	"github.com/picogate/picogate/internal/status"
)

// droppedResponseHeaders are sent by the API server but used by no device: the API Priority and
// Fairness headers and Cache-Control. Audit-Id is also removed from the device's response, after the
// access log has recorded it. Date stays: the reference firmware sets its clock from it.
var droppedResponseHeaders = []string{"X-Kubernetes-Pf-Flowschema-Uid", "X-Kubernetes-Pf-Prioritylevel-Uid", "Audit-Id", "Cache-Control"}

// compaction makes responses fit a microcontroller: for a non-watch JSON response it buffers the body
// (at most MaxCompactBytes), removes metadata.managedFields and answers with a Content-Length, never
// chunked. A larger, non-JSON or compressed response passes through untouched and streamed, so memory
// stays bounded whatever the upstream sends. A watch is compacted event by event without buffering more
// than one event.
func (g *Gateway) compaction(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &compactWriter{ResponseWriter: w, g: g, rec: recordFrom(r), watch: grantFrom(r).watch, head: r.Method == http.MethodHead,
			req: r, ring: g.ringClient(r)}
		defer func() {
			if v := recover(); v != nil {
				cw.abort(v, r)
			}
		}()
		next.ServeHTTP(cw, r)
		if cw.rec.upstream && !cw.watch && r.Context().Err() == context.DeadlineExceeded {
			// The request's deadline passed while the API server's answer was relayed. The server ends
			// its response when the gateway's cancellation reaches it, and net/http's client can read
			// that end as a clean one (the cancellation closes the connection while a read is still
			// waiting on it): what was read may be a prefix. Cut off, then, like a body that broke.
			panic(http.ErrAbortHandler)
		}
		cw.finish()
	})
}

// abort handles ReverseProxy's http.ErrAbortHandler, raised when the upstream body breaks off or the
// request's context ends mid-stream. If nothing has reached the device yet, it gets a clear 502 instead
// of a cut connection. A compacted watch is ended after its last whole event, well-formed (see
// endWatch). Otherwise the connection is aborted, which is how a device learns a streamed response is
// incomplete.
func (c *compactWriter) abort(v any, r *http.Request) {
	if v != http.ErrAbortHandler {
		panic(v)
	}
	switch {
	case c.mode == modeBuffer:
		c.release()
		c.mode = modePass
		c.g.metrics.upstreamErrors.WithLabelValues("truncated").Inc()
		for k := range c.Header() {
			delete(c.Header(), k)
		}
		refuseAs(c.ResponseWriter, r, "", "upstream response cut off", &status.Error{Code: http.StatusBadGateway, Message: "the Kubernetes API server's response was cut off; retry"})
	case c.mode == modeEvents && c.events.Abandon():
		c.endWatch(r)
	default:
		panic(v)
	}
}

// endWatch ends a watch whose stream stopped mid-way with a proper end of stream, so the device sees
// the watch end rather than a cut connection. When the gateway ended it (shutdown, or the device's
// credential changed) that is all, as when the API server ends a watch at its timeout. When the API
// server's stream broke off, an ERROR event with a 503 Status says so first, and the device backs off
// before it watches again.
func (c *compactWriter) endWatch(r *http.Request) {
	if r.Context().Err() != nil {
		return
	}
	c.rec.noteRefusal("", "upstream watch cut off")
	c.g.metrics.upstreamErrors.WithLabelValues("truncated").Inc()
	ev := append([]byte(`{"type":"ERROR","object":`), status.Body(http.StatusServiceUnavailable, "the Kubernetes API server's watch stream broke off; watch again")...)
	_, _ = c.ResponseWriter.Write(append(ev, "}\n"...))
}

type compactMode uint8

const (
	modeUndecided compactMode = iota
	modeBuffer
	modeEvents
	modePass
)

type compactWriter struct {
	http.ResponseWriter
	g     *Gateway
	rec   *record
	watch bool
	head  bool
	req   *http.Request
	ring  bool // the client keeps at most RingBytes of an answer (fitRing)

	mode   compactMode
	code   int
	buf    *[]byte
	events *compact.EventWriter
}

func (c *compactWriter) WriteHeader(code int) {
	if c.mode != modeUndecided {
		return
	}
	c.code = code
	h := c.Header()
	if id := h.Get("Audit-Id"); id != "" {
		c.rec.noteAuditID(id)
	}
	for _, k := range droppedResponseHeaders {
		delete(h, k)
	}
	ct := h.Get("Content-Type")
	jsonBody := strings.HasPrefix(ct, "application/json") && h.Get("Content-Encoding") == ""
	switch {
	case !c.g.cfg.Compact || !jsonBody || c.head || code < 200 || code == http.StatusNoContent:
		c.mode = modePass
	case c.watch:
		c.mode = modeEvents
		c.events = compact.NewEventWriter(c.ResponseWriter, c.g.cfg.MaxCompactBytes)
	default:
		if v := h.Get("Content-Length"); v != "" {
			if cl, err := strconv.ParseInt(v, 10, 64); err == nil && cl > int64(c.g.cfg.MaxCompactBytes) {
				c.mode = modePass
				break
			}
		}
		c.mode = modeBuffer
		c.buf = c.g.respBufs.Get().(*[]byte)
		return // the real header is written by finish, with the compacted length
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *compactWriter) Write(p []byte) (int, error) {
	if c.mode == modeUndecided {
		c.WriteHeader(http.StatusOK)
	}
	switch c.mode {
	case modeBuffer:
		if len(*c.buf)+len(p) <= c.g.cfg.MaxCompactBytes {
			*c.buf = append(*c.buf, p...)
			return len(p), nil
		}
		// Over the cap: stream from here on, untouched, with the upstream's own framing.
		c.mode = modePass
		c.g.metrics.compactSkipped.WithLabelValues("too-large").Inc()
		c.ResponseWriter.WriteHeader(c.code)
		if _, err := c.ResponseWriter.Write(*c.buf); err != nil {
			return 0, err
		}
		c.release()
		return c.ResponseWriter.Write(p)
	case modeEvents:
		return c.events.Write(p)
	default:
		return c.ResponseWriter.Write(p)
	}
}

// Flush is a no-op while buffering (ReverseProxy flushes after every write of a chunked upstream body).
func (c *compactWriter) Flush() {
	if c.mode == modeBuffer {
		return
	}
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection (deadlines).
func (c *compactWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// finish writes a buffered response, compacted when it is valid JSON and as received otherwise.
func (c *compactWriter) finish() {
	switch c.mode {
	case modeEvents:
		_ = c.events.Close()
		return
	case modeBuffer:
	default:
		return
	}
	defer c.release()
	body := *c.buf
	out := c.g.respBufs.Get().(*[]byte)
	defer c.g.putRespBuf(out)
	compacted, err := compact.Append((*out)[:0], body)
	if err == nil {
		*out = compacted
		c.g.metrics.compactSaved.Add(float64(len(body) - len(compacted)))
		body = compacted
	} else {
		c.g.metrics.compactSkipped.WithLabelValues("invalid-json").Inc()
	}
	h := c.Header()
	h.Del("Transfer-Encoding")
	if c.ring {
		scratch := c.g.respBufs.Get().(*[]byte)
		defer c.g.putRespBuf(scratch)
		body = c.fitRing(body, scratch)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	c.ResponseWriter.WriteHeader(c.code)
	_, _ = c.ResponseWriter.Write(body)
}

func (c *compactWriter) release() {
	if c.buf != nil {
		c.g.putRespBuf(c.buf)
		c.buf = nil
	}
}

func newBufPool(size int) *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, 0, size); return &b }}
}

func (g *Gateway) putRespBuf(b *[]byte) {
	if cap(*b) <= 2*g.cfg.MaxCompactBytes {
		*b = (*b)[:0]
		g.respBufs.Put(b)
	}
}
