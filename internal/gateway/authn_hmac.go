package gateway

import (
	"crypto/sha256"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/picogate/picogate/internal/hmacauth"
	"github.com/picogate/picogate/internal/registry"
)

// claim checks a signed request's header (hmac mode; the format is in internal/hmacauth) without its
// body: the grammar, a known hmac device, its source, the timestamp window, a single Content-Type. A
// stranger fails here at the cost of a map lookup. What passes is a claim on the device, not yet the
// device: verify checks the signature once the body is read.
func (g *Gateway) claim(r *http.Request, client netip.Addr, authz string) (id Identity, reason, detail string) {
	h, err := hmacauth.ParseAuthorization(authz)
	if err != nil {
		return Identity{}, authMalformed, ""
	}
	d, reason := g.signedDevice(h.Credential, client)
	if reason != "" {
		return Identity{}, reason, ""
	}
	now := g.cfg.Now().Unix()
	window := int64(g.cfg.HMACWindow / time.Second)
	if skew := h.Timestamp - now; skew > window || skew < -window {
		return Identity{}, authClockSkew, "request timestamp " + h.TimeRaw + " is " + strconv.FormatInt(skew, 10) + "s from the gateway's clock (" +
			strconv.FormatInt(now, 10) + "; allowed ±" + strconv.FormatInt(window, 10) + "s): set the clock from the Date header or GET " + LocalPrefix + "time"
	}
	if len(r.Header["Content-Type"]) > 1 {
		return Identity{}, authMalformed, ""
	}
	return Identity{kind: deviceIdentity, device: d, state: g.states.get(d.Name), claim: &h}, "", ""
}

// signedDevice finds the hmac device a signed request names, or why it cannot be used.
func (g *Gateway) signedDevice(name string, client netip.Addr) (*registry.Device, string) {
	if g.registry == nil {
		return nil, authUnknown
	}
	if !g.registry.HasSynced() {
		return nil, authNotSynced
	}
	d, ok := g.registry.ByName(name)
	switch {
	case !ok || d.Auth != registry.AuthHMAC || !d.HasCredential():
		return nil, authUnknown
	case d.IsRevoked():
		return nil, authRevoked
	case d.Source.IsValid() && !d.Source.Contains(client):
		return nil, authSource
	}
	return d, ""
}

// verify completes a signed request's authentication once its body is read: the signature over method,
// path, query, content type, timestamp, nonce and body is checked against the device's key and, during
// a rotation, its next key; then the nonce is recorded so this gateway accepts the request once. A
// forged request gives back the rate-limit token it took and never touches the nonce cache. A verified
// request's body no longer counts as unverified bytes, and a refusal authorize deferred until now is
// given. Other requests pass untouched.
func (g *Gateway) verify(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := identityFrom(r)
		if id.claim == nil {
			next.ServeHTTP(w, r)
			return
		}
		body := bodyFrom(r)
		h, d, st := id.claim, id.device, id.state
		m := hmacauth.Message{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Timestamp: h.TimeRaw, Nonce: h.Nonce,
			BodySHA256: sha256.Sum256(body.Bytes())}
		if ct := r.Header["Content-Type"]; len(ct) == 1 {
			m.ContentType = ct[0]
		}
		usedNext := false
		if !st.verifier(0, d.Key).Verify(&m, &h.Signature) {
			if len(d.NextKey) == 0 || !st.verifier(1, d.NextKey).Verify(&m, &h.Signature) {
				chargeFrom(r).refund()
				g.refuseAuth(w, r, authBadSignature, "")
				return
			}
			usedNext = true
		}
		window := int64(g.cfg.HMACWindow / time.Second)
		switch err := st.nonceCache(g.cfg.NonceCacheSize).Add(h.Nonce, h.Timestamp+window, g.cfg.Now().Unix()); err {
		case nil:
		case hmacauth.ErrCacheFull:
			g.refuseAuth(w, r, authNonceFull, "too many signed requests from node "+d.Name+" within the replay window")
			return
		default:
			chargeFrom(r).refund()
			g.refuseAuth(w, r, authReplay, "nonce already used: each signed request needs a fresh random nonce (a replayed request is refused)")
			return
		}
		if usedNext && g.cfg.OnNextCredential != nil {
			g.cfg.OnNextCredential(d.Name, d.NextKey)
		}
		body.verified()
		vid := Identity{kind: deviceIdentity, device: d, state: st, signed: d.Key}
		if usedNext {
			vid.signed = d.NextKey
		}
		recordFrom(r).noteIdentity(vid)
		if gr := grantFrom(r); gr.deferred != nil {
			// The device itself asked for what authorize refused: it is told now, and its token stays
			// spent (its body was read for the signature).
			refuse(w, r, gr.rule, gr.deferred)
			return
		}
		next.ServeHTTP(w, with(r, verifiedKey, vid))
	})
}
