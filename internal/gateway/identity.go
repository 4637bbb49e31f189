package gateway

import (
	"net/http"

	"github.com/picogate/picogate/internal/hmacauth"
	"github.com/picogate/picogate/internal/registry"
)

// SharedUser and SharedGroup are who a request without a device credential is forwarded as on a
// gateway with --shared-identity: a restricted identity that the cluster's RBAC grants only what the
// reference firmware needs, never the gateway's own credential. The API server adds
// system:authenticated.
const (
	SharedUser  = "picogate:shared"
	SharedGroup = "picogate:shared"
)

type identityKind uint8

const (
	// The zero kind is anonymous, never forwarded: the gateway's anonymous endpoints (time, enrollment).
	_ identityKind = iota
	// deviceIdentity requests are forwarded as the device's own node.
	deviceIdentity
	// sharedIdentity requests carry no credential and are forwarded as SharedUser (--shared-identity).
	sharedIdentity
)

// Identity is who a request is forwarded as: a device (its own node, system:node:NAME in the groups
// system:nodes and picogate:devices), the shared identity, or nobody (the gateway's anonymous
// endpoints). authenticate decides it; for a signed request it is first a claim (the header checked,
// the name known, the timestamp in the window) that verify turns into the device once the signature
// over the body is right. Immutable: a step that learns more hands on a new one.
type Identity struct {
	kind   identityKind
	device *registry.Device
	state  *deviceState
	claim  *hmacauth.Header // a signed request whose signature verify has yet to check
	signed []byte           // the key a verified signature was made with (the device's key or its next)
}

// Device is the authenticated device, or nil (shared, anonymous, or a signature not yet verified).
func (id Identity) Device() *registry.Device {
	if id.kind != deviceIdentity || id.claim != nil {
		return nil
	}
	return id.device
}

// SigningKey is the key a signed request was verified with (the device's current key, or its next key
// during a rotation), or nil: an hmac device's rotation binds its next key to it.
func (id Identity) SigningKey() []byte {
	if id.Device() == nil {
		return nil
	}
	return id.signed
}

// Shared reports whether the request is forwarded as SharedUser.
func (id Identity) Shared() bool { return id.kind == sharedIdentity }

// verified reports whether the request is a device's whose credential has been checked: before its
// body (token, address) or after it (signature). Every other request (a signature not yet checked, the
// shared identity, an anonymous endpoint) is unauthenticated work: its body counts against the
// gateway's budget of unverified bytes.
func (id Identity) verified() bool { return id.kind == deviceIdentity && id.claim == nil }

// String is how the access log names the identity.
func (id Identity) String() string {
	switch id.kind {
	case deviceIdentity:
		return id.device.User[0] // system:node:NAME, built once per device
	case sharedIdentity:
		return SharedUser
	default:
		return "-"
	}
}

// identityFrom is who the request is forwarded as: verify's device for a signed request whose signature
// held, else what authenticate decided.
func identityFrom(r *http.Request) Identity {
	x := exchangeOf(r)
	if x.verified.set {
		return x.verified.v
	}
	return x.identity.get()
}

// IdentityFrom returns who the request is forwarded as. Every step after authenticate, and every local
// endpoint, may call it.
func IdentityFrom(r *http.Request) Identity { return identityFrom(r) }

// DeviceFrom returns the device a request was authenticated as, or nil: for local endpoints, which run
// after the signature is verified.
func DeviceFrom(r *http.Request) *registry.Device { return identityFrom(r).Device() }

// SigningKey returns the key a signed request was verified with, or nil (see Identity.SigningKey).
func SigningKey(r *http.Request) []byte { return identityFrom(r).SigningKey() }
