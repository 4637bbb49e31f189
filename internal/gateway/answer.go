package gateway

import (
	"net/http"

	"github.com/picogate/picogate/internal/registry"
)

// Answer may answer a device's request itself instead of forwarding it — heartbeat translation
// (heartbeat.Translator.ServeStatusPatch), cached reads (readcache.Cache.ServeGet), the shared pod watch
// (podwatch.Hub.ServeWatch, in Config.WatchAnswers). It reports whether it did; when it did not, it has
// written nothing and the request goes on to the proxy. It runs after every check (identity, policy,
// limits — a watch's caps included —, body, signature, inspection) and within the request's deadline,
// and any request it makes upstream must be made as d. body is the whole request body, valid during the
// call.
type Answer func(w http.ResponseWriter, r *http.Request, d *registry.Device, body []byte) bool

// answer gives each device request that reaches the proxy to Config.Answers (a watch: to
// Config.WatchAnswers), in order; the first that takes it answers it. A request none takes is forwarded,
// and Config.Forwarded, when it asks, is then told the status the API server answered with. The shared
// identity's requests are always forwarded.
func (g *Gateway) answer(next http.Handler) http.Handler {
	if len(g.cfg.Answers) == 0 && len(g.cfg.WatchAnswers) == 0 && g.cfg.Forwarded == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := identityFrom(r).Device()
		if d != nil {
			answers := g.cfg.Answers
			if grantFrom(r).watch {
				answers = g.cfg.WatchAnswers
			}
			body := bodyFrom(r).Bytes()
			for _, a := range answers {
				if a(w, r, d, body) {
					return
				}
			}
		}
		var told func(int)
		if d != nil && g.cfg.Forwarded != nil {
			told = g.cfg.Forwarded(r, d)
		}
		if told == nil {
			next.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if recordFrom(r).upstream {
			told(sw.code)
		}
	})
}

// statusWriter keeps the status the proxy answers with. It sees it before compaction does (which writes
// a buffered answer's header only once the answer is whole).
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Flush and Unwrap keep a relayed watch streaming (ReverseProxy flushes through http.ResponseController).
func (w *statusWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
