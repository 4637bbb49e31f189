package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/picogate/picogate/internal/status"
)

// newProxy builds the forwarding step: header hygiene and impersonation in Rewrite, then the upstream
// transport. Watches are flushed event by event (ReverseProxy flushes at once when the upstream sends no
// Content-Length, which the API server never does for a watch).
func (g *Gateway) newProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:        g.rewrite,
		Transport:      g.cfg.Transport,
		FlushInterval:  -1,
		BufferPool:     &bufferPool{pool: sync.Pool{New: func() any { return new([copyBufSize]byte) }}},
		ErrorHandler:   g.proxyError,
		ModifyResponse: g.upstreamRefusedGateway,
	}
}

// upstreamRefusedGateway turns the API server's 401 into a 503 with Retry-After. Devices never send a
// credential upstream, so a 401 means the gateway's own credential was refused (expired token, a
// rotation gone wrong): the device did nothing wrong, and a 401 would look to its firmware exactly like
// its own revocation.
func (g *Gateway) upstreamRefusedGateway(res *http.Response) error {
	if res.StatusCode != http.StatusUnauthorized {
		return nil
	}
	g.metrics.upstreamErrors.WithLabelValues("credential-refused").Inc()
	g.log.Error("the API server refused the gateway's own credential; answering devices 503", "path", res.Request.URL.Path)
	_ = res.Body.Close()
	b := status.Body(http.StatusServiceUnavailable, "the gateway's credential was refused by the Kubernetes API server")
	res.StatusCode, res.Status = http.StatusServiceUnavailable, "503 Service Unavailable"
	res.Header = http.Header{"Content-Type": {"application/json"}, "Retry-After": {"5"}, "Content-Length": {strconv.Itoa(len(b))}}
	res.Body, res.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	return nil
}

// rewrite builds the outgoing request. Nothing that could carry identity survives from the device:
// Authorization, every Impersonate-* and X-Remote-* header (the API server's impersonation and
// front-proxy headers), and cookies. ReverseProxy has already removed hop-by-hop and X-Forwarded-*
// headers. A device is then impersonated as its own node; with the shared identity nothing is added.
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(g.cfg.Upstream)
	h := pr.Out.Header
	for k := range h {
		if strings.HasPrefix(k, "Impersonate-") || strings.HasPrefix(k, "X-Remote-") {
			delete(h, k)
		}
	}
	delete(h, "Authorization")
	delete(h, "Proxy-Authorization")
	delete(h, "Cookie")
	pr.SetXForwarded() // the API server's audit log then records the device's address in sourceIPs
	delete(h, "X-Forwarded-Host")
	delete(h, "X-Forwarded-Proto")
	switch id := identityFrom(pr.In); {
	case id.Device() != nil:
		h["Impersonate-User"] = id.device.User
		h["Impersonate-Group"] = id.device.Groups
	case id.Shared():
	default:
		// Unreachable: authenticate and verify let only these two through to here.
		panic("gateway: forwarding a request without an identity")
	}
}

// proxyError answers when the API server could not be reached or did not answer in time: 503 with
// Retry-After, never a hang and never a half response dressed up as a whole one.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	kind := upstreamErrorKind(r, err)
	if kind == "client-gone" {
		recordFrom(r).noteRefusal("", "upstream: "+kind)
		return // nobody to answer; the access log records it
	}
	g.metrics.upstreamErrors.WithLabelValues(kind).Inc()
	g.log.Warn("upstream request failed", "kind", kind, "err", err, "method", r.Method, "path", r.URL.Path)
	msg := "the Kubernetes API server is unavailable"
	if kind == "timeout" {
		msg = "the Kubernetes API server did not answer in time"
	}
	refuseAs(w, r, "", "upstream: "+kind, &status.Error{Code: http.StatusServiceUnavailable, Message: msg, RetryAfter: retryAfterUnavailable})
}

func upstreamErrorKind(r *http.Request, err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		return "client-gone"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	default:
		return "transport"
	}
}

// copyBufSize is ReverseProxy's copy buffer, pooled as arrays so Put does not allocate. A watch holds
// one for as long as it is open, so it is small: 10,000 watches hold 80 MB at 8 KiB, 320 MB at net/http's
// 32 KiB. Non-watch bodies are collected by compaction anyway, so a larger buffer would buy nothing.
const copyBufSize = 8 << 10

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte { return p.pool.Get().(*[copyBufSize]byte)[:] }
func (p *bufferPool) Put(b []byte) {
	if cap(b) >= copyBufSize {
		p.pool.Put((*[copyBufSize]byte)(b[:copyBufSize]))
	}
}
