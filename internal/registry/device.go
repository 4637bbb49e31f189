// Package registry is picogate's device registry. Each device is one Secret in the gateway's namespace
// (picogate-system by default), so every gateway replica reads the same records through the API server
// and there is no state of picogate's own to back up or replicate. A Secret holds the device's node name,
// its auth mode, its credential (a SHA-256 of its token, never the token; or, in hmac mode, its signing
// key, which the gateway must know to check signatures), the source addresses it may use, and when it
// was created or revoked. An enrolled device's record also holds its hardware id and, while it waits for
// an operator's approval, the enrollment request.
package registry

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/picogate/picogate/device"
)

// AuthMode is how a device proves who it is.
type AuthMode string

const (
	// AuthToken: the device sends "Authorization: Bearer <token>".
	AuthToken AuthMode = "token"
	// AuthIP: the device is recognised by its source address alone (the unmodified reference firmware on a
	// DHCP reservation). Weaker than a token: anyone who can send from that address on the LAN is that device.
	AuthIP AuthMode = "ip"
	// AuthHMAC: the device signs every request with HMAC-SHA256 and a 256-bit key (internal/hmacauth).
	// The key is the record's secret: HMAC is symmetric, so the gateway must hold it to check a signature.
	AuthHMAC AuthMode = "hmac"
)

// Secret layout, shared by the gateway (reader) and the CLI (writer).
const (
	SecretType   = "picogate.io/device"
	LabelKind    = "picogate.io/kind"
	KindDevice   = "device"
	LabelManaged = "app.kubernetes.io/managed-by"
	ManagedBy    = "picogate"
	SecretPrefix = "device-"

	keyName     = "name"
	keyAuth     = "auth"
	keyHash     = "token-sha256"
	keyHashNext = "token-sha256-next"
	keyKey      = "hmac-key"
	keyKeyNext  = "hmac-key-next"
	keySource   = "source"
	keyCreated  = "created"
	keyRevoked  = "revoked"

	keyHardware      = "hardware-id"
	keyEnrolledBy    = "enrolled-by"
	keyPending       = "enroll-requested"
	keyPendingAuth   = "enroll-auth"
	keyPendingToken  = "enroll-token-sha256"
	keyPendingApprov = "enroll-approved"
	keyPendingEphem  = "enroll-ephemeral-key"

	// LabelEnrolledBy names the enrollment token a record was enrolled with, so revoking the token can
	// find the enrollments it left waiting for approval.
	LabelEnrolledBy = "picogate.io/enrolled-by"

	// TokenPrefix marks picogate device tokens so they are recognisable in a leaked log or a scanner.
	TokenPrefix = "pgt_"
)

// Device is one registered device as the gateway sees it.
type Device struct {
	Name      string
	Auth      AuthMode
	TokenHash [sha256.Size]byte // zero unless Auth is AuthToken
	// NextTokenHash (token mode) or NextKey (hmac mode) is the credential a device-initiated rotation
	// issued: valid alongside the current one until its first use promotes it.
	NextTokenHash [sha256.Size]byte
	Key, NextKey  []byte // hmac mode: the signing keys (KeySize bytes)
	// Source restricts where requests may come from; for AuthIP it is the device's single address.
	// Invalid (zero) means any address the gateway's --allow-cidr admits.
	Source  netip.Prefix
	Created time.Time
	Revoked time.Time // zero unless revoked

	// HardwareID is the id an enrolled device gave (its flash or MAC id); EnrolledBy is the id of the
	// enrollment token it used. Both empty for devices added with `picogate device add`.
	HardwareID, EnrolledBy string
	// Enrollment is non-nil while an enrollment request waits for an operator's approval, or has been
	// approved and waits for the device to collect its credential.
	Enrollment *Enrollment

	// User and Groups are the impersonation header values, built once so the request path only copies
	// slice headers.
	User   []string
	Groups []string
}

// Enrollment is an enrollment request of a device that needs an operator's approval.
type Enrollment struct {
	Requested time.Time
	Approved  time.Time // zero until `picogate device approve`
	Auth      AuthMode  // the auth mode the device asked for
	// TokenHash is the SHA-256 of the enrollment token that asked: only a request with the same token may
	// collect the credential.
	TokenHash [sha256.Size]byte
	// EphemeralKey is the board's X25519 public key of an hmac enrollment (key agreement): the key the
	// approved poll derives is bound to it, so only the board holding its private half can use it.
	EphemeralKey []byte
}

// KeySize is the size of an hmac-mode device key: device.KeySize, the key the board signs with.
const KeySize = device.KeySize

// HasCredential reports whether the device has a credential to authenticate with (a pending enrollment
// of a new device has none yet).
func (d *Device) HasCredential() bool {
	switch d.Auth {
	case AuthToken:
		return d.TokenHash != [sha256.Size]byte{}
	case AuthHMAC:
		return len(d.Key) == KeySize
	default:
		return true
	}
}

// Rotating reports whether a device-initiated rotation issued a credential not used yet.
func (d *Device) Rotating() bool { return d.NextTokenHash != [sha256.Size]byte{} || len(d.NextKey) > 0 }

// NodeUser is the Kubernetes user a device acts as: the Node authorizer's form for node NAME.
func NodeUser(name string) string { return "system:node:" + name }

// DeviceGroups are the groups every device is forwarded with: system:nodes (Node authorizer and
// NodeRestriction) and picogate:devices (so a fleet can be granted extra reads with plain RBAC).
var deviceGroups = []string{"system:nodes", "picogate:devices"}

// DeviceGroups returns the impersonated groups.
func DeviceGroups() []string { return append([]string(nil), deviceGroups...) }

// NodeMarkerLabel marks a Node that picogate created for a device: the gateway sets it on every Node
// create it forwards for a device. Device names live in the same namespace as real nodes, so every step
// that could touch a real node checks it first: enrollment refuses a name whose Node lacks it, a device
// whose Node lacks it is refused, and deregistration deletes only a Node that carries it.
const NodeMarkerLabel = "picogate.io/device"

// IsDeviceNode reports whether a Node with these labels was created by picogate for a device.
func IsDeviceNode(labels map[string]string) bool { return labels[NodeMarkerLabel] == "true" }

// IsRevoked reports whether the device's credential has been revoked.
func (d *Device) IsRevoked() bool { return !d.Revoked.IsZero() }

// LogValue keeps token material out of logs even if a Device is logged whole.
func (d *Device) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", d.Name), slog.String("auth", string(d.Auth)), slog.String("source", d.SourceString()))
}

// SourceString is the device's allowed source for display: a CIDR, or "any".
func (d *Device) SourceString() string {
	if !d.Source.IsValid() {
		return "any"
	}
	return d.Source.String()
}

// ValidateName checks a device name is a valid Kubernetes node name (device.ValidateNodeName) that also
// fits the Secret name.
func ValidateName(name string) error {
	if err := device.ValidateNodeName(name); err != nil {
		return fmt.Errorf("invalid device name %q: %w", name, err)
	}
	if len(SecretPrefix)+len(name) > validation.DNS1123SubdomainMaxLength {
		return fmt.Errorf("invalid device name %q: at most %d characters", name, validation.DNS1123SubdomainMaxLength-len(SecretPrefix))
	}
	return nil
}

// SecretName is the name of the Secret that holds device name.
func SecretName(name string) string { return SecretPrefix + name }

// Token is a bearer secret: a device's token, or an enrollment token (package enroll). It formats as
// "[redacted]" so it cannot leak through %v or slog.
type Token string

// String redacts the token.
func (Token) String() string { return "[redacted]" }

// LogValue redacts the token.
func (Token) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Reveal returns the token itself, for the one place that must print it (device add/rotate).
func (t Token) Reveal() string { return string(t) }

// NewToken returns a fresh token: 256 random bits, base64url, with the pgt_ prefix.
func NewToken() (Token, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating token: %w", err)
	}
	return Token(TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])), nil
}

// HashToken is the lookup key and stored form of a token.
func HashToken(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// ParseSource parses a CIDR or a single address ("10.0.0.5" means 10.0.0.5/32). IPv4-mapped IPv6 forms
// ("::ffff:10.0.0.5", "::ffff:10.0.0.0/120") become their IPv4 equivalent, the form clients are compared
// in, so one address has one spelling (two ip-mode devices on it are seen to collide).
func ParseSource(s string) (netip.Prefix, error) {
	if s == "" || s == "any" {
		return netip.Prefix{}, nil
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid source %q: want an IP address or CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// fromSecretData decodes a device record, reporting every problem at once.
func fromSecretData(data map[string][]byte) (*Device, error) {
	var errs []error
	d := &Device{Name: string(data[keyName]), Auth: AuthMode(data[keyAuth]),
		HardwareID: string(data[keyHardware]), EnrolledBy: string(data[keyEnrolledBy])}
	if err := ValidateName(d.Name); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, decodeCredentials(d, data)...)
	src, err := ParseSource(string(data[keySource]))
	if err != nil {
		errs = append(errs, err)
	}
	d.Source = src
	if d.Auth == AuthIP && (!src.IsValid() || src.Bits() != src.Addr().BitLen()) {
		errs = append(errs, fmt.Errorf("auth ip needs a single source address, got %q", data[keySource]))
	}
	for key, t := range map[string]*time.Time{keyCreated: &d.Created, keyRevoked: &d.Revoked} {
		errs = append(errs, decodeTime(data, key, t))
	}
	e, err := decodeEnrollment(data)
	d.Enrollment = e
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	d.User = []string{NodeUser(d.Name)}
	d.Groups = deviceGroups
	return d, nil
}

// decodeCredentials reads the current and next credential of the device's auth mode. A revoked device,
// or one whose enrollment is still waiting, may have no current credential.
func decodeCredentials(d *Device, data map[string][]byte) []error {
	var errs []error
	mayLack := len(data[keyRevoked]) > 0 || len(data[keyPending]) > 0
	switch d.Auth {
	case AuthToken:
		if err := decodeHash(data, keyHash, &d.TokenHash, !mayLack); err != nil {
			errs = append(errs, err)
		}
		if err := decodeHash(data, keyHashNext, &d.NextTokenHash, false); err != nil {
			errs = append(errs, err)
		}
	case AuthHMAC:
		var err error
		if d.Key, err = decodeKey(data, keyKey, !mayLack); err != nil {
			errs = append(errs, err)
		}
		if d.NextKey, err = decodeKey(data, keyKeyNext, false); err != nil {
			errs = append(errs, err)
		}
	case AuthIP:
	default:
		errs = append(errs, fmt.Errorf("unknown auth mode %q", d.Auth))
	}
	return errs
}

func decodeHash(data map[string][]byte, key string, into *[sha256.Size]byte, required bool) error {
	v, ok := data[key]
	if !ok && !required {
		return nil
	}
	h, err := hex.DecodeString(string(v))
	if err != nil || len(h) != sha256.Size {
		return fmt.Errorf("%s is not a hex SHA-256", key)
	}
	copy(into[:], h)
	return nil
}

func decodeKey(data map[string][]byte, key string, required bool) ([]byte, error) {
	v, ok := data[key]
	if !ok && !required {
		return nil, nil
	}
	k, err := hex.DecodeString(string(v))
	if err != nil || len(k) != KeySize {
		return nil, fmt.Errorf("%s is not a hex %d-byte key", key, KeySize)
	}
	return k, nil
}

func decodeTime(data map[string][]byte, key string, into *time.Time) error {
	v := data[key]
	if len(v) == 0 {
		return nil
	}
	ts, err := time.Parse(time.RFC3339, string(v))
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	*into = ts
	return nil
}

func decodeEnrollment(data map[string][]byte) (*Enrollment, error) {
	if len(data[keyPending]) == 0 {
		return nil, nil
	}
	e := &Enrollment{Auth: AuthMode(data[keyPendingAuth])}
	errs := []error{decodeTime(data, keyPending, &e.Requested), decodeTime(data, keyPendingApprov, &e.Approved),
		decodeHash(data, keyPendingToken, &e.TokenHash, true)}
	var err error
	e.EphemeralKey, err = decodeKey(data, keyPendingEphem, false) // an X25519 public key is KeySize bytes too
	errs = append(errs, err)
	if e.Auth != AuthToken && e.Auth != AuthHMAC {
		errs = append(errs, fmt.Errorf("%s: want token or hmac, got %q", keyPendingAuth, e.Auth))
	}
	return e, errors.Join(errs...)
}

// secretData encodes a device record.
func secretData(d *Device) map[string][]byte {
	data := map[string][]byte{
		keyName:    []byte(d.Name),
		keyAuth:    []byte(d.Auth),
		keyCreated: []byte(d.Created.UTC().Format(time.RFC3339)),
	}
	put := func(key string, v []byte) {
		if len(v) > 0 {
			data[key] = v
		}
	}
	putHash := func(key string, h [sha256.Size]byte) {
		if h != ([sha256.Size]byte{}) {
			data[key] = []byte(hex.EncodeToString(h[:]))
		}
	}
	putTime := func(key string, t time.Time) {
		if !t.IsZero() {
			data[key] = []byte(t.UTC().Format(time.RFC3339))
		}
	}
	if d.Source.IsValid() {
		data[keySource] = []byte(d.Source.String())
	}
	switch d.Auth {
	case AuthToken:
		putHash(keyHash, d.TokenHash)
		putHash(keyHashNext, d.NextTokenHash)
	case AuthHMAC:
		put(keyKey, []byte(hex.EncodeToString(d.Key)))
		put(keyKeyNext, []byte(hex.EncodeToString(d.NextKey)))
	}
	putTime(keyRevoked, d.Revoked)
	put(keyHardware, []byte(d.HardwareID))
	put(keyEnrolledBy, []byte(d.EnrolledBy))
	if e := d.Enrollment; e != nil {
		putTime(keyPending, e.Requested)
		putTime(keyPendingApprov, e.Approved)
		put(keyPendingAuth, []byte(e.Auth))
		putHash(keyPendingToken, e.TokenHash)
		put(keyPendingEphem, []byte(hex.EncodeToString(e.EphemeralKey)))
	}
	return data
}
