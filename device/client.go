package device

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// APIError is an HTTP error answer from the gateway or the API server, with
// the fields of the Kubernetes Status it carried.
type APIError struct {
	Method     string
	Path       string
	Code       int           // HTTP status code
	Reason     string        // Status.reason, e.g. "AlreadyExists", "Gone"
	Message    string        // Status.message
	RetryAfter time.Duration // from Retry-After, for 429 and 503
}

func (e *APIError) Error() string {
	msg := e.Message
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.Code, e.Reason, msg)
}

// IsCode reports whether err is an APIError with the given HTTP status code.
func IsCode(err error, code int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// retryAfter returns the wait the server asked for, or 0.
func retryAfter(err error) time.Duration {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.RetryAfter
	}
	return 0
}

// maxRetryAfter caps a server's Retry-After so a bad header cannot park a
// device for hours.
const maxRetryAfter = 5 * time.Minute

// parseRetryAfter reads the delay-seconds form of Retry-After.
func parseRetryAfter(h string) time.Duration {
	n, err := strconv.Atoi(h)
	if err != nil || n < 0 {
		return 0
	}
	d := time.Duration(n) * time.Second
	return min(d, maxRetryAfter)
}

// transport sends the agent's requests and keeps the counters.
type transport struct {
	gateway   string
	token     string
	signer    Signer
	userAgent string
	client    *http.Client
	maxBody   int
	timeout   time.Duration
	clock     *clock
	stats     *stats
	bufs      sync.Pool // *bytes.Buffer for response bodies
	localAddr func(net.Addr)
	log       *slog.Logger
	dial      func(ctx context.Context, network, addr string) (net.Conn, error) // nil with a caller's HTTPClient
}

func newTransport(c *Config, clk *clock, st *stats, learnAddr func(net.Addr), log *slog.Logger) *transport {
	t := &transport{
		gateway:   c.Gateway,
		token:     c.Token,
		signer:    c.Signer,
		userAgent: "picogate-device/" + c.Version,
		client:    c.HTTPClient,
		maxBody:   c.MaxResponseBytes,
		timeout:   c.RequestTimeout,
		clock:     clk,
		stats:     st,
		localAddr: learnAddr,
		log:       log,
	}
	t.bufs.New = func() any { return new(bytes.Buffer) }
	if t.client == nil {
		dial := c.Dial
		if dial == nil {
			d := &net.Dialer{Timeout: c.RequestTimeout, KeepAlive: 30 * time.Second}
			dial = d.DialContext
		}
		t.dial = dial
		t.client = &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				conn, err := dial(ctx, network, addr)
				if err == nil && t.localAddr != nil {
					t.localAddr(conn.LocalAddr())
				}
				return conn, err
			},
			TLSClientConfig:       c.TLS,
			MaxIdleConnsPerHost:   2,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: c.RequestTimeout,
			ForceAttemptHTTP2:     false,
		}}
	}
	return t
}

// newRequest builds a request with the agent's headers and authentication.
func (t *transport) newRequest(ctx context.Context, method, path, ctype string, body []byte) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.gateway+path, r)
	if err != nil {
		return nil, fmt.Errorf("building %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", t.userAgent)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if t.token != "" {
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	if t.signer != nil {
		if err := t.signer.Sign(req, body); err != nil {
			return nil, fmt.Errorf("signing %s %s: %w", method, path, err)
		}
	}
	return req, nil
}

// do sends one non-watch request and calls fn with the body of a 2xx
// response. The body is only valid during fn. An error answer becomes an
// *APIError.
func (t *transport) do(ctx context.Context, method, path, ctype string, body []byte, fn func(code int, body jval) error) error {
	return t.doHandling(ctx, method, path, ctype, body, 0, fn)
}

// doHandling is do for a request whose caller handles an answer with code
// handled itself: a create answered 409 because the object exists (a board
// that reboots finds its Node; the gateway may have created the Lease from
// the first heartbeat). That answer is still returned as an *APIError, but it
// is not counted in Status.Errors: it is an outcome the agent expects, not a
// failure.
func (t *transport) doHandling(ctx context.Context, method, path, ctype string, body []byte, handled int, fn func(code int, body jval) error) error {
	return t.exchange(ctx, method, path, ctype, body, "", handled, func(resp *http.Response, v jval) error {
		if fn == nil {
			return nil
		}
		return fn(resp.StatusCode, v)
	})
}

// exchange is doHandling with an optional If-None-Match header: a 304 answer
// then reaches fn with a nil body instead of becoming an error.
func (t *transport) exchange(ctx context.Context, method, path, ctype string, body []byte, ifNoneMatch string, handled int, fn func(resp *http.Response, body jval) error) error {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	req, err := t.newRequest(ctx, method, path, ctype, body)
	if err != nil {
		return err
	}
	if ifNoneMatch != "" {
		req.Header.Set("If-None-Match", ifNoneMatch)
	}
	t.stats.request()
	resp, err := t.client.Do(req)
	if err != nil {
		if parent.Err() != nil {
			return parent.Err() // stopping: not a failure of the gateway
		}
		t.stats.fail(kindOf(ctx, err))
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	t.clock.observe(resp.Header.Get("Date"))
	if ifNoneMatch != "" && resp.StatusCode == http.StatusNotModified {
		return fn(resp, nil)
	}
	buf := t.bufs.Get().(*bytes.Buffer)
	defer t.putBuf(buf)
	if resp.ContentLength > int64(t.maxBody) {
		t.stats.fail(KindTooLarge)
		return fmt.Errorf("%s %s: response of %d bytes is over the %d-byte limit", method, path, resp.ContentLength, t.maxBody)
	}
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, int64(t.maxBody)+1)); err != nil {
		if parent.Err() != nil {
			return parent.Err()
		}
		t.stats.fail(kindOf(ctx, err))
		return fmt.Errorf("%s %s: reading response: %w", method, path, err)
	}
	if buf.Len() > t.maxBody {
		t.stats.fail(KindTooLarge)
		return fmt.Errorf("%s %s: response over the %d-byte limit", method, path, t.maxBody)
	}
	if resp.StatusCode >= 300 {
		ae := statusError(method, path, resp, buf.Bytes())
		if ae.Code != handled {
			t.stats.fail(httpKind(ae.Code))
		}
		t.log.Debug("request refused", "method", method, "path", path, "code", ae.Code, "reason", ae.Reason, "message", ae.Message)
		return ae
	}
	v, err := parseJSON(buf.Bytes())
	if err != nil {
		t.stats.fail(KindDecode)
		return fmt.Errorf("%s %s: response: %w", method, path, err)
	}
	return fn(resp, v)
}

// probeLocalAddr opens and closes one connection to the gateway to learn
// the local address before the first request is built, so the Node is
// created with its InternalIP. It does nothing with a caller's HTTPClient.
func (t *transport) probeLocalAddr(ctx context.Context) {
	if t.dial == nil || t.localAddr == nil {
		return
	}
	u, err := url.Parse(t.gateway)
	if err != nil {
		return
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), map[bool]string{true: "443", false: "80"}[u.Scheme == "https"])
	}
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	if conn, err := t.dial(ctx, "tcp", host); err == nil {
		t.localAddr(conn.LocalAddr())
		conn.Close()
	}
}

func (t *transport) putBuf(b *bytes.Buffer) {
	if b.Cap() > 2*t.maxBody {
		return // let an outsized buffer go
	}
	b.Reset()
	t.bufs.Put(b)
}

// statusError reads a Kubernetes Status from an error body; a body that is
// not one (a plain-text error from something in between) becomes the message.
func statusError(method, path string, resp *http.Response, body []byte) *APIError {
	ae := &APIError{Method: method, Path: path, Code: resp.StatusCode}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		ae.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"))
	}
	if v, err := parseJSON(body); err == nil && v.get("kind").equal("Status") {
		ae.Reason = v.get("reason").strOr("")
		ae.Message = v.get("message").strOr("")
		if c, ok := v.get("code").int(); ok && c != 0 {
			ae.Code = int(c)
		}
		return ae
	}
	ae.Reason = http.StatusText(resp.StatusCode)
	if len(body) > 200 {
		body = body[:200]
	}
	ae.Message = string(body)
	return ae
}

// Error kinds counted in Status.Errors.
const (
	KindNetwork  = "network"   // connection refused, reset, DNS, ...
	KindTimeout  = "timeout"   // a request deadline passed
	KindDecode   = "decode"    // a response that is not the JSON expected
	KindTooLarge = "too-large" // a response over MaxResponseBytes
	// HTTP errors are counted as "http-CODE", e.g. "http-429".
)

func httpKind(code int) string { return "http-" + strconv.Itoa(code) }

func kindOf(ctx context.Context, err error) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return KindTimeout
	}
	return KindNetwork
}

// clock is the agent's notion of now: the configured clock, optionally
// corrected by the gateway's Date header.
type clock struct {
	now    func() time.Time
	server bool
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	if !c.server {
		return c.now()
	}
	c.mu.Lock()
	off := c.offset
	c.mu.Unlock()
	return c.now().Add(off)
}

// observe adjusts the offset from a Date header. The header has whole-second
// resolution, so an offset within 2 s of the current one is kept, which
// keeps the clock monotonic in practice.
func (c *clock) observe(date string) {
	if !c.server || date == "" {
		return
	}
	t, err := http.ParseTime(date)
	if err != nil {
		return
	}
	off := t.Sub(c.now())
	c.mu.Lock()
	if d := off - c.offset; d > 2*time.Second || d < -2*time.Second {
		c.offset = off
	}
	c.mu.Unlock()
}

// syncClock sets the agent's clock from the gateway before anything is signed: GET /picogate/v1/time
// needs no credential, and its Date header is all the clock needs. A failure is left to the first
// signed request, whose answer carries a Date too.
func (t *transport) syncClock(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", t.gateway+"/picogate/v1/time", nil)
	if err != nil {
		return
	}
	req.Header.Set("User-Agent", t.userAgent)
	resp, err := t.client.Do(req)
	if err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1024))
	resp.Body.Close()
	t.clock.observe(resp.Header.Get("Date"))
}
