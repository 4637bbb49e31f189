package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// observe is the outermost middleware: it creates the request's info, and when the request is done
// writes one access-log line and the metrics for it. The log line names the client, the identity it was
// forwarded as, the rule, status, bytes and duration, and the API server's Audit-Id; never a credential.
// For watches it also keeps a write deadline moving, so a device that stops reading is cut off after
// WriteTimeout instead of holding its watch forever.
func (g *Gateway) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := &reqInfo{start: time.Now(), bodyPending: r.Body != nil && r.Body != http.NoBody}
		rw := &recordingWriter{ResponseWriter: w, info: info, g: g, rc: http.NewResponseController(w)}
		_ = rw.rc.SetWriteDeadline(info.start.Add(g.cfg.WriteTimeout))
		g.metrics.inFlight.Inc()
		defer func() {
			g.metrics.inFlight.Dec()
			g.record(r, rw)
		}()
		next.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), infoKey{}, info)))
	})
}

func (g *Gateway) record(r *http.Request, rw *recordingWriter) {
	info := rw.info
	code := rw.code
	if code == 0 {
		code = 499 // the client went away before an answer, nginx's convention
		if info.reason == "" {
			info.reason = "client closed the connection"
		}
	}
	elapsed := time.Since(info.start)
	codeStr := strconv.Itoa(code)
	route := info.route
	if route == "" {
		route = "none"
	}
	g.metrics.requests.WithLabelValues(codeStr, route).Inc()
	if !info.watch {
		g.metrics.duration.WithLabelValues(route).Observe(elapsed.Seconds())
		if rw.bytes > 4096 {
			g.metrics.overBuffer.Inc()
		}
	}
	g.metrics.responseBytes.Add(float64(rw.bytes))
	if info.device != nil {
		g.metrics.deviceRequests.WithLabelValues(info.device.Name, codeStr).Inc()
		g.metrics.deviceLastSeen.WithLabelValues(info.device.Name).Set(float64(info.start.Unix()))
	}
	if !g.cfg.AccessLog {
		return
	}
	level := slog.LevelInfo
	if code >= 500 {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("client", info.client.String()),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", code),
		slog.Int64("bytes", rw.bytes),
		slog.Duration("duration", elapsed),
		slog.String("identity", info.identity()),
		slog.String("route", route),
	}
	if r.URL.RawQuery != "" {
		attrs = append(attrs, slog.String("query", r.URL.RawQuery))
	}
	if info.watch {
		attrs = append(attrs, slog.Bool("watch", true))
	}
	if info.auditID != "" {
		attrs = append(attrs, slog.String("audit_id", info.auditID))
	}
	if info.reason != "" {
		attrs = append(attrs, slog.String("reason", info.reason))
	}
	g.access.LogAttrs(r.Context(), level, "request", attrs...)
}

// recordingWriter captures the status and size of the response for the access log.
type recordingWriter struct {
	http.ResponseWriter
	info  *reqInfo
	g     *Gateway
	rc    *http.ResponseController
	code  int
	bytes int64
}

func (w *recordingWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	if w.info.watch {
		_ = w.rc.SetWriteDeadline(time.Now().Add(w.g.cfg.WriteTimeout))
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *recordingWriter) Flush() { _ = w.rc.Flush() }

func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
