package gateway

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/picogate/picogate/internal/hmacauth"
	"github.com/picogate/picogate/internal/registry"
)

// authenticateSigned authenticates a signed request (hmac mode; the format is in internal/hmacauth).
// The cheap checks come first — header grammar, a known hmac device, its source, the timestamp window —
// so a stranger costs no body read. Then the body is read (it is signed) and buffered here for the rest
// of the chain (limit does not read it again), the signature is checked against the device's key and,
// during a rotation, its next key, and the nonce is recorded so this gateway accepts the request once.
// Verifying before anything else of the device's is touched means a forged request cannot spend a
// device's rate limit or nonce cache.
func (g *Gateway) authenticateSigned(w http.ResponseWriter, r *http.Request, info *reqInfo, authz string, next http.Handler) {
	h, err := hmacauth.ParseAuthorization(authz)
	if err != nil {
		g.refuseAuth(w, info, authMalformed, "")
		return
	}
	d, reason := g.signedDevice(h.Credential, info)
	if reason != "" {
		g.refuseAuth(w, info, reason, "")
		return
	}
	now := g.cfg.Now().Unix()
	window := int64(g.cfg.HMACWindow / time.Second)
	if skew := h.Timestamp - now; skew > window || skew < -window {
		g.refuseAuth(w, info, authClockSkew, "request timestamp "+h.TimeRaw+" is "+strconv.FormatInt(skew, 10)+"s from the gateway's clock ("+
			strconv.FormatInt(now, 10)+"; allowed ±"+strconv.FormatInt(window, 10)+"s): set the clock from the Date header or GET "+LocalPrefix+"time")
		return
	}
	ctype := r.Header["Content-Type"]
	if len(ctype) > 1 {
		g.refuseAuth(w, info, authMalformed, "")
		return
	}
	body, ok := g.bufferSignedBody(w, r, info)
	if !ok {
		return
	}
	if body != nil {
		defer g.putBody(body)
	}
	m := hmacauth.Message{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Timestamp: h.TimeRaw, Nonce: h.Nonce}
	if len(ctype) == 1 {
		m.ContentType = ctype[0]
	}
	if body != nil {
		m.BodySHA256 = sha256.Sum256(*body)
	} else {
		m.BodySHA256 = sha256.Sum256(nil)
	}
	st := g.states.get(d.Name)
	usedNext := false
	if !st.verifier(0, d.Key).Verify(&m, &h.Signature) {
		if len(d.NextKey) == 0 || !st.verifier(1, d.NextKey).Verify(&m, &h.Signature) {
			g.refuseAuth(w, info, authBadSignature, "")
			return
		}
		usedNext = true
	}
	switch err := st.nonceCache(g.cfg.NonceCacheSize).Add(h.Nonce, h.Timestamp+window, now); err {
	case nil:
	case hmacauth.ErrCacheFull:
		g.refuseAuth(w, info, authNonceFull, "too many signed requests from node "+d.Name+" within the replay window")
		return
	default:
		g.refuseAuth(w, info, authReplay, "nonce already used: each signed request needs a fresh random nonce (a replayed request is refused)")
		return
	}
	if usedNext && g.cfg.OnNextCredential != nil {
		g.cfg.OnNextCredential(d.Name, d.NextKey)
	}
	info.device, info.state = d, st
	next.ServeHTTP(w, r)
}

// signedDevice finds the hmac device a signed request names, or why it cannot be used.
func (g *Gateway) signedDevice(name string, info *reqInfo) (*registry.Device, string) {
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
	case d.Source.IsValid() && !d.Source.Contains(info.client):
		return nil, authSource
	}
	return d, ""
}

// bufferSignedBody reads a signed request's body within the body limits, as limit would, and leaves it
// in place for the rest of the chain. It answers the request itself when the body is refused.
func (g *Gateway) bufferSignedBody(w http.ResponseWriter, r *http.Request, info *reqInfo) (*[]byte, bool) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true
	}
	body, code, err := g.readBody(w, r)
	if err != nil {
		g.refuse(w, info, code, "auth", err.Error())
		return nil, false
	}
	r.Body = io.NopCloser(bytes.NewReader(*body))
	r.ContentLength = int64(len(*body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(*body)), nil }
	info.bodyBuffered = true
	return body, true
}
