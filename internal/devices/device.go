// Package devices is picogate's device registry. Each device is one Secret in the gateway's namespace
// (picogate-system by default), so every gateway replica reads the same records through the API server
// and there is no state of picogate's own to back up or replicate. A Secret holds the device's node name,
// its auth mode, a SHA-256 of its token (never the token), the source addresses it may use, and when it
// was created or revoked.
package devices

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// AuthMode is how a device proves who it is.
type AuthMode string

const (
	// AuthToken: the device sends "Authorization: Bearer <token>".
	AuthToken AuthMode = "token"
	// AuthIP: the device is recognised by its source address alone (the unmodified reference firmware on a
	// DHCP reservation). Weaker than a token: anyone who can send from that address on the LAN is that device.
	AuthIP AuthMode = "ip"
)

// Secret layout, shared by the gateway (reader) and the CLI (writer).
const (
	SecretType   = "picogate.io/device"
	LabelKind    = "picogate.io/kind"
	KindDevice   = "device"
	LabelManaged = "app.kubernetes.io/managed-by"
	ManagedBy    = "picogate"
	SecretPrefix = "device-"

	keyName    = "name"
	keyAuth    = "auth"
	keyHash    = "token-sha256"
	keySource  = "source"
	keyCreated = "created"
	keyRevoked = "revoked"

	// TokenPrefix marks picogate device tokens so they are recognisable in a leaked log or a scanner.
	TokenPrefix = "pgt_"
)

// Device is one registered device as the gateway sees it.
type Device struct {
	Name      string
	Auth      AuthMode
	TokenHash [sha256.Size]byte // zero unless Auth is AuthToken
	// Source restricts where requests may come from; for AuthIP it is the device's single address.
	// Invalid (zero) means any address the gateway's --allow-cidr admits.
	Source  netip.Prefix
	Created time.Time
	Revoked time.Time // zero unless revoked

	// User and Groups are the impersonation header values, built once so the request path only copies
	// slice headers.
	User   []string
	Groups []string
}

// NodeUser is the Kubernetes user a device acts as: the Node authorizer's form for node NAME.
func NodeUser(name string) string { return "system:node:" + name }

// DeviceGroups are the groups every device is forwarded with: system:nodes (Node authorizer and
// NodeRestriction) and picogate:devices (so a fleet can be granted extra reads with plain RBAC).
var deviceGroups = []string{"system:nodes", "picogate:devices"}

// DeviceGroups returns the impersonated groups.
func DeviceGroups() []string { return append([]string(nil), deviceGroups...) }

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

// ValidateName checks a device name is a valid Kubernetes node name that also fits the Secret name.
func ValidateName(name string) error {
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return fmt.Errorf("invalid device name %q: %s", name, strings.Join(msgs, "; "))
	}
	if len(SecretPrefix)+len(name) > validation.DNS1123SubdomainMaxLength {
		return fmt.Errorf("invalid device name %q: at most %d characters", name, validation.DNS1123SubdomainMaxLength-len(SecretPrefix))
	}
	return nil
}

// SecretName is the name of the Secret that holds device name.
func SecretName(name string) string { return SecretPrefix + name }

// Token is a device's bearer credential. It formats as "[redacted]" so it cannot leak through %v or slog.
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

// ParseSource parses a CIDR or a single address ("10.0.0.5" means 10.0.0.5/32).
func ParseSource(s string) (netip.Prefix, error) {
	if s == "" || s == "any" {
		return netip.Prefix{}, nil
	}
	if p, err := netip.ParsePrefix(s); err == nil {
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
	d := &Device{Name: string(data[keyName]), Auth: AuthMode(data[keyAuth])}
	if err := ValidateName(d.Name); err != nil {
		errs = append(errs, err)
	}
	switch d.Auth {
	case AuthToken:
		h, err := hex.DecodeString(string(data[keyHash]))
		if err != nil || len(h) != sha256.Size {
			if len(data[keyRevoked]) == 0 {
				errs = append(errs, errors.New("token-sha256 is not a hex SHA-256"))
			}
		} else {
			copy(d.TokenHash[:], h)
		}
	case AuthIP:
	default:
		errs = append(errs, fmt.Errorf("unknown auth mode %q", d.Auth))
	}
	src, err := ParseSource(string(data[keySource]))
	if err != nil {
		errs = append(errs, err)
	}
	d.Source = src
	if d.Auth == AuthIP && (!src.IsValid() || src.Bits() != src.Addr().BitLen()) {
		errs = append(errs, fmt.Errorf("auth ip needs a single source address, got %q", data[keySource]))
	}
	for key, t := range map[string]*time.Time{keyCreated: &d.Created, keyRevoked: &d.Revoked} {
		if v := data[key]; len(v) > 0 {
			ts, err := time.Parse(time.RFC3339, string(v))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", key, err))
			}
			*t = ts
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	d.User = []string{NodeUser(d.Name)}
	d.Groups = deviceGroups
	return d, nil
}

// secretData encodes a device record; token is the hash's source only when rotating or adding.
func secretData(d *Device) map[string][]byte {
	data := map[string][]byte{
		keyName:    []byte(d.Name),
		keyAuth:    []byte(d.Auth),
		keyCreated: []byte(d.Created.UTC().Format(time.RFC3339)),
	}
	if d.Source.IsValid() {
		data[keySource] = []byte(d.Source.String())
	}
	if d.Auth == AuthToken && d.TokenHash != ([sha256.Size]byte{}) {
		data[keyHash] = []byte(hex.EncodeToString(d.TokenHash[:]))
	}
	if !d.Revoked.IsZero() {
		data[keyRevoked] = []byte(d.Revoked.UTC().Format(time.RFC3339))
	}
	return data
}
