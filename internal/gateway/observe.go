package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/picogate/picogate/internal/dashboard"
)

// record is one request's access-log record: the only mutable per-request value of the request path.
// observe creates it and reads it when the request is done; the steps write it only through the note
// methods, each a fact the step is the one to know.
type record struct {
	start    time.Time
	client   netip.Addr
	identity Identity
	rule     string // the policy rule or local endpoint; "" until one is known
	watch    bool
	auditID  string // the API server's Audit-Id, so a log line can be joined with the audit log
	reason   string // why picogate refused the request, or why it failed ("" if it did neither)
	upstream bool   // the answer is the API server's, relayed (not one the gateway made)
}

func recordFrom(r *http.Request) *record { return &exchangeOf(r).rec }

// noteClient records the client's address (sourceCheck).
func (rec *record) noteClient(a netip.Addr) { rec.client = a }

// noteIdentity records who the request is forwarded as, once that is certain (authenticate; verify
// for a signed request): a forged signature is never logged as the device it names.
func (rec *record) noteIdentity(id Identity) { rec.identity = id }

// noteRule records the rule or endpoint that decided the request, and whether it is a watch.
func (rec *record) noteRule(rule string, watch bool) { rec.rule, rec.watch = rule, watch }

// noteAuditID records the API server's Audit-Id of the answer (compaction).
func (rec *record) noteAuditID(id string) { rec.auditID = id }

// noteUpstream records that the API server's answer is being relayed (the proxy, once it has its
// header).
func (rec *record) noteUpstream() { rec.upstream = true }

// noteRefusal records why the request was refused or failed, and the rule, unless a step before
// already named one.
func (rec *record) noteRefusal(rule, reason string) {
	if rec.rule == "" {
		rec.rule = rule
	}
	rec.reason = reason
}

// observe is the first step: it creates the request's record, and when the request is done writes one
// access-log line and the metrics for it. The log line names the client, the identity it was forwarded
// as, the rule, status, bytes and duration, and the API server's Audit-Id; never a credential. For
// watches it also keeps a write deadline moving, so a device that stops reading is cut off after
// WriteTimeout instead of holding its watch forever.
func (g *Gateway) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x := &exchange{rec: record{start: time.Now()}}
		rec, rw := &x.rec, &x.rw
		*rw = recordingWriter{ResponseWriter: w, rec: rec, timeout: g.cfg.WriteTimeout, rc: http.NewResponseController(w), req: r}
		_ = rw.rc.SetWriteDeadline(rec.start.Add(g.cfg.WriteTimeout))
		g.metrics.inFlight.Inc()
		defer func() {
			g.metrics.inFlight.Dec()
			g.logRequest(r, rw)
		}()
		next.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), exchangeKey, x)))
	})
}

func (g *Gateway) logRequest(r *http.Request, rw *recordingWriter) {
	rec := rw.rec
	code := rw.code
	if code == 0 {
		code = 499 // the client went away before an answer, nginx's convention
		if rec.reason == "" {
			rec.reason = "client closed the connection"
		}
	}
	elapsed := time.Since(rec.start)
	rule := rec.rule
	if rule == "" {
		rule = "none"
	}
	g.metrics.requestsFor(code, rule).Inc()
	if !rec.watch {
		g.metrics.durationFor(rule).Observe(elapsed.Seconds())
		if rw.head+rw.bytes > int64(g.cfg.RingBytes) {
			client := "other"
			if g.ringClient(r) {
				client = "ring-limited"
			}
			g.metrics.overRing.WithLabelValues(client).Inc()
		}
	}
	g.metrics.responseBytes.Add(float64(rw.bytes))
	if d := rec.identity.Device(); d != nil {
		st := rec.identity.state
		st.requestsFor(g.metrics, d.Name, code).Inc()
		st.lastSeen.Set(float64(rec.start.Unix()))
	}
	if g.cfg.OnRequest != nil {
		g.cfg.OnRequest(dashboardEvent(r, rec, code, elapsed))
	}
	if !g.cfg.AccessLog {
		return
	}
	line := accessLine{level: slog.LevelInfo, client: rec.client, method: r.Method, path: r.URL.Path, status: code,
		bytes: rw.bytes, duration: elapsed, identity: rec.identity.String(), route: rule, query: r.URL.RawQuery, watch: rec.watch,
		auditID: rec.auditID, reason: rec.reason}
	if code >= 500 {
		line.level = slog.LevelWarn
	}
	if g.accessOut != nil {
		line.time = time.Now()
		g.accessOut.write(&line)
		return
	}
	g.access.LogAttrs(r.Context(), line.level, "request", line.attrs()...)
}

// dashboardEvent is the record as the fleet dashboard takes it: no credential, nothing allocated.
func dashboardEvent(r *http.Request, rec *record, code int, elapsed time.Duration) dashboard.Event {
	ev := dashboard.Event{Start: rec.start, Duration: elapsed, Method: r.Method, Path: r.URL.Path, Status: code,
		Rule: rec.rule, Reason: rec.reason, Client: rec.client, UserAgent: r.Header.Get("User-Agent"), Watch: rec.watch,
		RateLimited: code == http.StatusTooManyRequests && rec.reason != "", UpstreamError: strings.HasPrefix(rec.reason, "upstream: ")}
	if d := rec.identity.Device(); d != nil {
		ev.Device, ev.Auth = d.Name, string(d.Auth)
	} else if rec.identity.Shared() {
		ev.Auth = "shared"
	}
	return ev
}

// recordingWriter captures the status and size of the response for the access log.
type recordingWriter struct {
	http.ResponseWriter
	rec     *record
	timeout time.Duration
	rc      *http.ResponseController
	req     *http.Request
	code    int
	head    int64 // the status line and headers (noteHead)
	bytes   int64 // the body
}

func (w *recordingWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
		w.noteHead()
	}
	w.ResponseWriter.WriteHeader(code)
}

// noteHead records the size of the status line and headers as they will go out (wireHeadBytes),
// counting a chunked answer's Transfer-Encoding line.
func (w *recordingWriter) noteHead() {
	h := w.Header()
	w.head = int64(wireHeadBytes(w.req, w.code, h))
	if h.Get("Content-Length") == "" {
		w.head += int64(len("Transfer-Encoding: chunked\r\n"))
	}
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
		w.noteHead()
	}
	if w.rec.watch {
		_ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *recordingWriter) Flush() { _ = w.rc.Flush() }

func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
