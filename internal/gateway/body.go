package gateway

import (
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/picogate/picogate/internal/status"
)

// Body is a request's body, read in full by readBody, the one step that reads it. Immutable; its bytes
// are valid until the request is done and must not be kept.
type Body struct {
	b    []byte
	hold *budgetHold // unverified bytes this body holds of the gateway's budget; nil if none
}

// Bytes returns the body; empty when the request has none.
func (b Body) Bytes() []byte { return b.b }

// verified gives the body's share of the unverified budget back: its sender is now known (verify).
func (b Body) verified() { b.hold.release() }

// bodyFrom is the body read by readBody, or the one a check replaced it with (inspect).
func bodyFrom(r *http.Request) Body {
	x := exchangeOf(r)
	if x.inspected.set {
		return x.inspected.v
	}
	return x.body.get()
}

// BodyFrom returns the request's body, read in full: every step after readBody, and every local
// endpoint, may call it.
func BodyFrom(r *http.Request) Body { return bodyFrom(r) }

// minUnverifiedCharge is what an unverified body costs the budget at the least, about what its
// connection costs the gateway besides (goroutine, buffers): so the budget also bounds how many such
// bodies can be waited for at once.
const minUnverifiedCharge = 16 << 10

// readBody reads the request body in full, within BodyTimeout and the size limit (413 beyond; 408 when
// it does not arrive in time), into a pooled buffer, and hands it on as a Body; the forwarded request
// reads it from there, so a slow upload ties up the gateway, never the API server. It comes after every
// limit. A body whose sender is not yet known (a signature not yet checked, the shared identity, an
// anonymous endpoint) must first fit the budget of unverified bytes (UnverifiedBodyBudget, 503 with
// Retry-After beyond): what strangers can make the gateway hold is bounded in total, not only per
// request.
func (g *Gateway) readBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, with(r, bodyKey, Body{}))
			return
		}
		limit := g.cfg.MaxBodyBytes
		if rt := routeFrom(r).local; rt != nil && rt.MaxBodyBytes > 0 {
			limit = rt.MaxBodyBytes
		}
		rule := grantFrom(r).rule
		if r.ContentLength > limit {
			refuse(w, r, rule, &status.Error{Code: http.StatusRequestEntityTooLarge,
				Message: "request body of " + strconv.FormatInt(r.ContentLength, 10) + " bytes is over the limit of " + strconv.FormatInt(limit, 10)})
			return
		}
		var hold *budgetHold
		if !identityFrom(r).verified() {
			want := limit
			if r.ContentLength >= 0 {
				want = r.ContentLength
			}
			if hold = g.unverified.take(max(want, minUnverifiedCharge)); hold == nil {
				g.metrics.overloaded.Inc()
				refuse(w, r, rule, &status.Error{Code: http.StatusServiceUnavailable, Message: "gateway is at its limit of request bodies from unauthenticated clients", RetryAfter: retryAfterUnavailable})
				return
			}
			defer hold.release()
		}
		pb, e := g.bodies.read(w, r, limit, g.cfg.BodyTimeout)
		if e != nil {
			refuse(w, r, rule, e)
			return
		}
		// The steps after this one read the pooled copy, on a shallow copy of the request: the request
		// the steps before it hold keeps the body they were given.
		r = with(r.WithContext(r.Context()), bodyKey, Body{b: pb.b, hold: hold})
		r.Body, r.GetBody, r.ContentLength = pb.reader(), pb.getBody, int64(len(pb.b))
		defer r.Body.Close()
		next.ServeHTTP(w, r)
	})
}

// bodyPool recycles body buffers. A buffer goes back only when the last reader of it is closed: a
// RoundTrip may read the request body after the handler has returned (net/http allows it; ReverseProxy
// says so), so recycling when the handler returns would hand bytes still being sent to the next
// request.
type bodyPool struct{ pool sync.Pool }

func newBodyPool() *bodyPool {
	return &bodyPool{pool: sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}}
}

// maxPooledBody is the largest buffer kept for reuse.
const maxPooledBody = 64 << 10

var errBodyClosed = errors.New("request body read after it was closed")

// read reads r's body (at most limit bytes) within timeout.
func (p *bodyPool) read(w http.ResponseWriter, r *http.Request, limit int64, timeout time.Duration) (*pooledBody, *status.Error) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(timeout))
	defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	buf := p.pool.Get().(*[]byte)
	b := (*buf)[:0]
	if r.ContentLength > int64(cap(b)) {
		b = make([]byte, 0, r.ContentLength) // read exactly the announced size, no doubling
	}
	n, err := readAtMost(r.Body, &b, limit+1)
	*buf = b
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		p.put(buf)
		return nil, &status.Error{Code: http.StatusRequestTimeout, Message: "request body not received within " + timeout.String()}
	case err != nil:
		p.put(buf)
		return nil, &status.Error{Code: http.StatusBadRequest, Message: "reading request body: " + err.Error()}
	case n > limit:
		p.put(buf)
		return nil, &status.Error{Code: http.StatusRequestEntityTooLarge, Message: "request body too large"}
	}
	return &pooledBody{pool: p, buf: buf, b: b}, nil
}

// readAtMost appends from r to *b until EOF or limit bytes. It grows *b only when a byte arrives that
// does not fit: a body of the announced length fills a buffer of that length exactly.
func readAtMost(r io.Reader, b *[]byte, limit int64) (int64, error) {
	var n int64
	for n < limit {
		var m int
		var err error
		if len(*b) == cap(*b) {
			var probe [1]byte
			if m, err = r.Read(probe[:]); m > 0 {
				*b = append(*b, probe[0])
			}
		} else {
			room := (*b)[len(*b):min(int64(cap(*b)), int64(len(*b))+limit-n)]
			m, err = r.Read(room)
			*b = (*b)[:len(*b)+m]
		}
		n += int64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (p *bodyPool) put(buf *[]byte) {
	if cap(*buf) <= maxPooledBody {
		*buf = (*buf)[:0]
		p.pool.Put(buf)
	}
}

// pooledBody is a read body shared by its readers: the request's Body and any a transport gets from
// GetBody to resend it. Reads and closes take the lock, so a read in flight finishes before the buffer
// is recycled, and a read after the close fails instead of seeing another request's bytes.
type pooledBody struct {
	pool *bodyPool
	b    []byte

	mu   sync.Mutex
	buf  *[]byte // nil once recycled
	open int     // readers not yet closed
}

func (pb *pooledBody) reader() io.ReadCloser {
	rd, _ := pb.getBody()
	return rd
}

// getBody is the request's GetBody: a new reader from the start, unless the body is already recycled.
func (pb *pooledBody) getBody() (io.ReadCloser, error) {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	if pb.buf == nil {
		return nil, errBodyClosed
	}
	pb.open++
	return &bodyReader{pb: pb}, nil
}

type bodyReader struct {
	pb     *pooledBody
	off    int
	closed bool // under pb.mu
}

func (r *bodyReader) Read(p []byte) (int, error) {
	r.pb.mu.Lock()
	defer r.pb.mu.Unlock()
	if r.closed {
		return 0, errBodyClosed
	}
	if r.off >= len(r.pb.b) {
		return 0, io.EOF
	}
	n := copy(p, r.pb.b[r.off:])
	r.off += n
	return n, nil
}

// Close ends this reader; the last one to close recycles the buffer.
func (r *bodyReader) Close() error {
	pb := r.pb
	pb.mu.Lock()
	defer pb.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if pb.open--; pb.open == 0 {
		pb.pool.put(pb.buf)
		pb.buf, pb.b = nil, nil
	}
	return nil
}

// budget bounds the bytes held at once for bodies whose sender is not yet known.
type budget struct {
	used  atomic.Int64
	limit int64
}

// budgetHold is one body's share of the budget, given back once.
type budgetHold struct {
	b    *budget
	n    int64
	done atomic.Bool
}

func newBudget(limit int64) *budget { return &budget{limit: limit} }

// take reserves n bytes, or returns nil when they do not fit.
func (b *budget) take(n int64) *budgetHold {
	if b.used.Add(n) > b.limit {
		b.used.Add(-n)
		return nil
	}
	return &budgetHold{b: b, n: n}
}

func (h *budgetHold) release() {
	if h != nil && h.done.CompareAndSwap(false, true) {
		h.b.used.Add(-h.n)
	}
}
