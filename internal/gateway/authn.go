package gateway

import (
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/picogate/picogate/internal/hmacauth"
	"github.com/picogate/picogate/internal/registry"
	"github.com/picogate/picogate/internal/status"
)

// Registry is what authentication needs from the device registry.
type Registry interface {
	ByToken(token string) (*registry.Device, bool)
	ByAddr(addr netip.Addr) (*registry.Device, bool)
	ByName(name string) (*registry.Device, bool) // hmac mode: the Credential of a signed request
	HasSynced() bool
}

// Auth failure reasons, used as the bounded label of picogate_auth_failures_total and in the log.
const (
	authMissing   = "missing"
	authMalformed = "malformed"
	authUnknown   = "unknown"
	authRevoked   = "revoked"
	authSource    = "wrong-source"
	authNotSynced = "registry-not-synced"

	authBadSignature = "bad-signature"
	authClockSkew    = "clock-skew"
	authReplay       = "replay"
	authNonceFull    = "nonce-cache-full"
	authHMACRequired = "hmac-required"
)

// authReasons are every reason, so each series exists from the start.
var authReasons = []string{authMissing, authMalformed, authUnknown, authRevoked, authSource, authNotSynced,
	authBadSignature, authClockSkew, authReplay, authNonceFull, authHMACRequired}

// authenticate decides who the request is forwarded as (see Identity): a device by its request
// signature (hmac mode), its bearer token, else (ip mode) its source address. Without a credential the
// request is refused unless the gateway runs with --shared-identity; a credential that is present but
// wrong is always refused, so a typo never silently downgrades a device to the shared identity. The
// response never says which check failed, except for a clock or nonce problem a device must fix itself;
// the log and metrics always do. With RequireHMAC every unsigned device is refused. An anonymous local
// endpoint (the time, enrollment) looks at no credential.
//
// A signed request is only a claim here: its header is checked (grammar, a known hmac device, its
// source, the timestamp window), which costs nothing. The signature covers the body, which is read only
// after the limits; verify checks it then.
func (g *Gateway) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt := routeFrom(r).local; rt != nil && !rt.Device && !(rt.OptionalDevice && len(r.Header["Authorization"]) > 0) {
			next.ServeHTTP(w, with(r, identityKey, Identity{}))
			return
		}
		client := clientFrom(r)
		if authz := r.Header["Authorization"]; len(authz) == 1 && hmacauth.IsSigned(authz[0]) {
			id, reason, detail := g.claim(r, client, authz[0])
			if reason != "" {
				g.refuseAuth(w, r, reason, detail)
				return
			}
			next.ServeHTTP(w, with(r, identityKey, id))
			return
		}
		d, reason := g.identify(r, client)
		if reason == "" && d != nil && g.cfg.RequireHMAC {
			reason = authHMACRequired
		}
		if reason != "" {
			g.refuseAuth(w, r, reason, "")
			return
		}
		id := Identity{kind: sharedIdentity}
		if d != nil {
			id = Identity{kind: deviceIdentity, device: d, state: g.states.get(d.Name)}
		}
		recordFrom(r).noteIdentity(id)
		next.ServeHTTP(w, with(r, identityKey, id))
	})
}

// refuseAuth answers an authentication failure and counts it; detail, if set, replaces the generic
// message for failures the device can only fix if it is told (its clock, its nonces).
func (g *Gateway) refuseAuth(w http.ResponseWriter, r *http.Request, reason, detail string) {
	g.metrics.authFailures.WithLabelValues(reason).Inc()
	e := &status.Error{Code: http.StatusUnauthorized, Message: detail}
	switch reason {
	case authNotSynced:
		e = &status.Error{Code: http.StatusServiceUnavailable, Message: "the device registry has not been loaded yet", RetryAfter: retryAfterUnavailable}
	case authNonceFull:
		e = &status.Error{Code: http.StatusTooManyRequests, Message: detail, RetryAfter: time.Second}
	case authHMACRequired:
		e.Message = "this gateway requires signed requests (auth hmac): bearer tokens and ip-mode devices are refused"
	}
	if e.Message == "" {
		e.Message = "authentication required: missing, unknown or revoked device credential"
	}
	logged := e.Message
	if e.Code == http.StatusUnauthorized {
		logged = "authentication failed: " + reason
	}
	refuseAs(w, r, "auth", logged, e)
}

// identify returns the device, nil for the shared identity, or a failure reason.
func (g *Gateway) identify(r *http.Request, client netip.Addr) (*registry.Device, string) {
	authz := r.Header["Authorization"]
	if len(authz) > 0 {
		if g.registry == nil {
			return nil, authUnknown
		}
		if len(authz) > 1 {
			return nil, authMalformed
		}
		token, ok := bearer(authz[0])
		if !ok {
			return nil, authMalformed
		}
		if !g.registry.HasSynced() {
			return nil, authNotSynced
		}
		d, ok := g.registry.ByToken(token)
		switch {
		case !ok || d.Auth != registry.AuthToken:
			return nil, authUnknown
		case d.IsRevoked():
			return nil, authRevoked
		case d.Source.IsValid() && !d.Source.Contains(client):
			return nil, authSource
		}
		if d.Rotating() && g.cfg.OnNextCredential != nil {
			if h := registry.HashToken(token); h == d.NextTokenHash {
				g.cfg.OnNextCredential(d.Name, h[:])
			}
		}
		return d, ""
	}
	if g.registry != nil {
		if !g.registry.HasSynced() {
			if g.cfg.SharedIdentity {
				return nil, ""
			}
			return nil, authNotSynced
		}
		if d, ok := g.registry.ByAddr(client); ok {
			return d, ""
		}
	}
	if g.cfg.SharedIdentity {
		return nil, ""
	}
	return nil, authMissing
}

// bearer extracts the token of an "Authorization: Bearer <token>" value. Tokens are printable ASCII
// without spaces; anything else is malformed, not looked up.
func bearer(v string) (string, bool) {
	const prefix = "Bearer "
	if len(v) <= len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
		return "", false
	}
	tok := v[len(prefix):]
	if len(tok) > 512 {
		return "", false
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] <= ' ' || tok[i] > '~' {
			return "", false
		}
	}
	return tok, true
}
