package gateway

import (
	"net/http"
	"net/netip"

	"github.com/picogate/picogate/internal/status"
)

// sourceCheck refuses clients outside the allowed source networks (--allow-cidr) with 403; nothing of
// theirs is forwarded. It hands on the client's address.
func (g *Gateway) sourceCheck(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			refuse(w, r, "source", &status.Error{Code: http.StatusForbidden, Message: "unrecognised client address"})
			return
		}
		client := ap.Addr().Unmap()
		recordFrom(r).noteClient(client)
		if !g.sourceAllowed(client) {
			refuse(w, r, "source", &status.Error{Code: http.StatusForbidden, Message: "source address " + client.String() + " is not allowed to use this gateway"})
			return
		}
		next.ServeHTTP(w, with(r, clientKey, client))
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
