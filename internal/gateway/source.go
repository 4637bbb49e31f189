package gateway

import (
	"net/http"
	"net/netip"
	"time"

	"github.com/picogate/picogate/internal/status"
)

// sourceCheck refuses clients outside the allowed source networks (--allow-cidr) with 403; nothing of
// theirs is forwarded. It also records the client address for the middlewares after it.
func (g *Gateway) sourceCheck(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := infoFrom(r)
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			g.refuse(w, info, http.StatusForbidden, "source", "unrecognised client address")
			return
		}
		info.client = ap.Addr().Unmap()
		if !g.sourceAllowed(info.client) {
			g.refuse(w, info, http.StatusForbidden, "source", "source address "+info.client.String()+" is not allowed to use this gateway")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (g *Gateway) sourceAllowed(a netip.Addr) bool {
	for _, p := range g.cfg.AllowCIDRs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// refuse answers a request picogate will not forward, and records why for the access log.
func (g *Gateway) refuse(w http.ResponseWriter, info *reqInfo, code int, route, reason string) {
	g.refuseRetry(w, info, code, route, reason, 0)
}

func (g *Gateway) refuseRetry(w http.ResponseWriter, info *reqInfo, code int, route, reason string, retry time.Duration) {
	if info.route == "" {
		info.route = route
	}
	info.reason = reason
	if info.bodyPending {
		// After a handler returns, net/http reads up to 256 KiB of an unread body, with no deadline, to
		// keep the connection: a body trickled at 1 byte/s would hold the connection for days, and
		// before the answer is flushed. The refusal closes the connection instead, at once.
		w.Header().Set("Connection", "close")
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
	status.WriteRetry(w, code, reason, retry)
}
