package enroll

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/picogate/picogate/internal/registry"
)

// Enrollment token Secrets, shaped like Kubernetes bootstrap tokens (a Secret per token, an id in its
// name, an expiry) but with picogate's own type, so kube-controller-manager's token cleaner and the
// API server's bootstrap authenticator never treat them as cluster credentials.
const (
	TokenSecretType   = "picogate.io/enrollment-token"
	KindToken         = "enrollment-token"
	TokenSecretPrefix = "enroll-"
	// TokenPrefix starts every enrollment token: pge_<id>.<secret>.
	TokenPrefix = "pge_"

	idLen     = 6
	secretLen = 26 // base32 characters: 130 random bits

	keyID         = "token-id"
	keyHash       = "token-sha256"
	keyExpiration = "expiration"
	keyUses       = "uses"
	keyUsed       = "used"
	keyPrefix     = "name-prefix"
	keyApprove    = "approve"
	keyCreated    = "created"
)

// Approve is how an enrollment with a token is let through.
type Approve string

const (
	// ApproveAuto creates the device and returns its credential at once.
	ApproveAuto Approve = "auto"
	// ApproveManual records the request and answers 202 until an operator runs `picogate device approve`.
	ApproveManual Approve = "manual"
)

// newToken returns a fresh enrollment token (redacted when formatted, like a device's) and its id.
func newToken() (registry.Token, string, error) {
	id, err := randomID()
	if err != nil {
		return "", "", err
	}
	return registry.Token(TokenPrefix + id + "." + strings.ToLower(rand.Text())), id, nil
}

// randomID returns idLen characters from [a-z0-9], uniformly.
func randomID() (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var out [idLen]byte
	var b [1]byte
	for i := 0; i < idLen; {
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("generating token id: %w", err)
		}
		if b[0] >= 252 { // 252 = 7*36: rejecting the rest keeps the choice uniform
			continue
		}
		out[i] = alphabet[b[0]%36]
		i++
	}
	return string(out[:]), nil
}

// ErrMalformedToken is returned for a string that is not shaped like an enrollment token.
var ErrMalformedToken = errors.New("not an enrollment token (want pge_<id>.<secret>)")

// ParseToken returns the id of an enrollment token after checking its shape.
func ParseToken(tok string) (id string, err error) {
	rest, ok := strings.CutPrefix(tok, TokenPrefix)
	if !ok {
		return "", ErrMalformedToken
	}
	id, secret, ok := strings.Cut(rest, ".")
	if !ok || len(id) != idLen || !lowerAlnum(id) || len(secret) != secretLen || !lowerAlnum(secret) {
		return "", ErrMalformedToken
	}
	return id, nil
}

func lowerAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// HashToken is the stored form of an enrollment token.
func HashToken(tok string) [sha256.Size]byte { return sha256.Sum256([]byte(tok)) }

// TokenInfo is an enrollment token as stored (everything but the token itself).
type TokenInfo struct {
	ID      string    `json:"id"`
	Expires time.Time `json:"expires"`
	// Uses is how many enrollments the token allows (0: any number until it expires); Used how many it
	// has been used for.
	Uses    int       `json:"uses"`
	Used    int       `json:"used"`
	Prefix  string    `json:"prefix,omitempty"`
	Approve Approve   `json:"approve"`
	Created time.Time `json:"created"`

	hash [sha256.Size]byte
}

// Expired reports whether the token has expired at now.
func (t *TokenInfo) Expired(now time.Time) bool { return !now.Before(t.Expires) }

// Exhausted reports whether the token has no uses left.
func (t *TokenInfo) Exhausted() bool { return t.Uses > 0 && t.Used >= t.Uses }

// State is the token's state for `token list`: active, expired or used up.
func (t *TokenInfo) State(now time.Time) string {
	switch {
	case t.Expired(now):
		return "expired"
	case t.Exhausted():
		return "used up"
	default:
		return "active"
	}
}

func tokenData(t *TokenInfo) map[string][]byte {
	return map[string][]byte{
		keyID:         []byte(t.ID),
		keyHash:       []byte(hex.EncodeToString(t.hash[:])),
		keyExpiration: []byte(t.Expires.UTC().Format(time.RFC3339)),
		keyUses:       []byte(strconv.Itoa(t.Uses)),
		keyUsed:       []byte(strconv.Itoa(t.Used)),
		keyPrefix:     []byte(t.Prefix),
		keyApprove:    []byte(t.Approve),
		keyCreated:    []byte(t.Created.UTC().Format(time.RFC3339)),
	}
}

// fromTokenData decodes a token Secret, reporting every problem at once.
func fromTokenData(data map[string][]byte) (*TokenInfo, error) {
	var errs []error
	t := &TokenInfo{ID: string(data[keyID]), Prefix: string(data[keyPrefix]), Approve: Approve(data[keyApprove])}
	if len(t.ID) != idLen || !lowerAlnum(t.ID) {
		errs = append(errs, fmt.Errorf("%s %q is not a token id", keyID, t.ID))
	}
	if h, err := hex.DecodeString(string(data[keyHash])); err != nil || len(h) != sha256.Size {
		errs = append(errs, fmt.Errorf("%s is not a hex SHA-256", keyHash))
	} else {
		copy(t.hash[:], h)
	}
	for key, into := range map[string]*time.Time{keyExpiration: &t.Expires, keyCreated: &t.Created} {
		v, err := time.Parse(time.RFC3339, string(data[key]))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
		*into = v
	}
	for key, into := range map[string]*int{keyUses: &t.Uses, keyUsed: &t.Used} {
		n, err := strconv.Atoi(string(data[key]))
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("%s %q is not a count", key, data[key]))
		}
		*into = n
	}
	if t.Approve != ApproveAuto && t.Approve != ApproveManual {
		errs = append(errs, fmt.Errorf("%s %q: want auto or manual", keyApprove, t.Approve))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return t, nil
}
