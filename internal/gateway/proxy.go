package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/picogate/picogate/internal/status"
)

// newProxy builds the forwarding step: header hygiene and impersonation in Rewrite, then the upstream
// transport. Watches are flushed event by event (ReverseProxy flushes at once when the upstream sends no
// Content-Length, which the API server never does for a watch).
func (g *Gateway) newProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:        g.rewrite,
		Transport:      g.upstreamTransport(),
		FlushInterval:  -1,
		BufferPool:     &bufferPool{pool: sync.Pool{New: func() any { return new([copyBufSize]byte) }}},
		ErrorHandler:   g.proxyError,
		ModifyResponse: g.upstreamAnswer,
	}
}

// upstreamTransport is Config.Transport, with watches on Config.WatchTransport when it is set.
func (g *Gateway) upstreamTransport() http.RoundTripper {
	if g.cfg.WatchTransport == nil {
		return g.cfg.Transport
	}
	return byWatch{other: g.cfg.Transport, watch: g.cfg.WatchTransport}
}

// byWatch sends a watch (grant.watch) on one transport and every other request on another.
type byWatch struct{ other, watch http.RoundTripper }

func (t byWatch) RoundTrip(r *http.Request) (*http.Response, error) {
	if grantFrom(r).watch {
		return t.watch.RoundTrip(r)
	}
	return t.other.RoundTrip(r)
}

// upstreamAnswer records that the API server's answer is relayed, then upstreamRefusedGateway.
func (g *Gateway) upstreamAnswer(res *http.Response) error {
	recordFrom(res.Request).noteUpstream()
	return g.upstreamRefusedGateway(res)
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

// forwardingHeaders are headers a client could use to put words in the API server's audit log: a
// proxy's record of who the client is (X-Real-Ip, Forwarded, Via, X-Forwarded-* and their vendor
// spellings) and the audit ID the API server takes from a request that has one.
var forwardingHeaders = []string{"Audit-Id", "X-Real-Ip", "Forwarded", "Via", "True-Client-Ip", "X-Client-Ip",
	"X-Cluster-Client-Ip", "X-Original-Forwarded-For", "Cf-Connecting-Ip", "Fastly-Client-Ip"}

// rewrite builds the outgoing request. Nothing that could carry identity survives from the device:
// Authorization, every Impersonate-* and X-Remote-* header (the API server's impersonation and
// front-proxy headers), cookies, and every header that claims a client address or an audit ID. The
// request is then impersonated as its identity — the device's own node, or SharedUser — and
// X-Forwarded-For names the device's address, so the API server's audit log records it in sourceIPs. A
// watch's timeoutSeconds is capped at MaxWatchTimeout (and set to it when absent).
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(g.cfg.Upstream)
	h := pr.Out.Header
	for k := range h { // one pass over the few headers a device sends, not a delete per name
		if strippedHeader(k) {
			delete(h, k)
		}
	}
	// What SetXForwarded sets, less X-Forwarded-Host and -Proto: every X-Forwarded-* is gone by now.
	if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		h["X-Forwarded-For"] = []string{ip}
	}
	switch id := identityFrom(pr.In); {
	case id.Device() != nil:
		h["Impersonate-User"] = id.device.User
		h["Impersonate-Group"] = id.device.Groups
	case id.Shared():
		h["Impersonate-User"] = g.sharedUser
		h["Impersonate-Group"] = g.sharedGroups
	default:
		// Unreachable: authenticate and verify let only these two through to here. Never forward a
		// request with the gateway's own credential.
		panic("gateway: forwarding a request without an identity")
	}
	if grantFrom(pr.In).watch {
		pr.Out.URL.RawQuery = capWatchTimeout(pr.Out.URL.RawQuery, g.cfg.MaxWatchTimeout)
	}
}

// strippedHeader reports whether rewrite removes the header k: credentials, the API server's
// impersonation and front-proxy headers, and forwardingHeaders.
func strippedHeader(k string) bool {
	return strings.HasPrefix(k, "Impersonate-") || strings.HasPrefix(k, "X-Remote-") || strings.HasPrefix(k, "X-Forwarded-") ||
		k == "Authorization" || k == "Proxy-Authorization" || k == "Cookie" || slices.Contains(forwardingHeaders, k)
}

// capWatchTimeout returns raw (a query the policy accepted: every key once) with timeoutSeconds at most
// limit, and set to limit when absent. A value that is not a number is left for the API server to refuse.
func capWatchTimeout(raw string, limit time.Duration) string {
	want := int64(limit / time.Second)
	set := "timeoutSeconds=" + strconv.FormatInt(want, 10)
	parts := strings.Split(raw, "&")
	for i, part := range parts {
		k, v, _ := strings.Cut(part, "=")
		if k != "timeoutSeconds" {
			if dk, err := url.QueryUnescape(k); err != nil || dk != "timeoutSeconds" {
				continue
			}
		}
		dv, _ := url.QueryUnescape(v)
		if n, err := strconv.ParseInt(dv, 10, 64); err != nil || (n != 0 && n <= want) {
			return raw // 0 is the API server's "its own default", 30 to 60 minutes: capped like absent
		}
		parts[i] = set
		return strings.Join(parts, "&")
	}
	if raw == "" {
		return set
	}
	return raw + "&" + set
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
// one for as long as it is open, so it is small: 5,000 boards' pod watches hold 10 MB at 2 KiB, 40 MB at
// 8 KiB, 160 MB at net/http's 32 KiB. A pod's watch event is about that size, and non-watch bodies are
// collected by compaction anyway, so a larger buffer would only save a few copy calls.
const copyBufSize = 2 << 10

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte { return p.pool.Get().(*[copyBufSize]byte)[:] }
func (p *bufferPool) Put(b []byte) {
	if cap(b) >= copyBufSize {
		p.pool.Put((*[copyBufSize]byte)(b[:copyBufSize]))
	}
}
