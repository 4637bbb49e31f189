// Package hmacauth is picogate's request signing, the "hmac" auth mode: a device holds a 256-bit key and
// signs every request with HMAC-SHA256 over a canonical string of its method, path, query, content type,
// timestamp, nonce and body hash. Over plain HTTP a sniffed bearer token can be replayed forever; a signed
// request can be replayed only within the timestamp window, and not at all to a gateway that has seen its
// nonce.
//
// The wire format (docs/device-protocol.md has a worked example, checked by this package's tests):
//
//	Authorization: PGW1-HMAC-SHA256 Credential=NAME, Timestamp=UNIX, Nonce=HEX32, Signature=HEX64
//
//	canonical = METHOD "\n" PATH "\n" QUERY "\n" CONTENT-TYPE "\n" TIMESTAMP "\n" NONCE "\n" hex(sha256(BODY))
//	signature = hex(HMAC-SHA256(key, canonical))
//
// The grammar is exact (one space after the scheme, parameters in this order separated by ", ", lowercase
// hex) so a C firmware can produce it with one snprintf and the gateway can parse it without allocating.
// The device/ package has its own implementation of the signing side (standard library only, for TinyGo);
// both are checked against the same test vectors. Keys are device.KeySize bytes; a Credential must pass
// device.ValidateNodeName (the registry decides whether such a device exists).
package hmacauth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"strconv"
	"strings"
	"sync"

	"github.com/picogate/picogate/device"
)

// Scheme is the Authorization scheme of a signed request.
const Scheme = "PGW1-HMAC-SHA256"

// NonceHexLen is the length of a nonce in hex digits (128 random bits).
const NonceHexLen = 32

// EmptyBodySHA256 is hex(sha256("")), the body hash of a request without a body.
const EmptyBodySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// maxTimestampDigits bounds the Timestamp parameter: Unix seconds fit in 11 digits until the year 5138.
const maxTimestampDigits = 12

// Header is a parsed Authorization header of a signed request. Its strings point into the header value.
type Header struct {
	Credential string // the device name
	Timestamp  int64  // Unix seconds
	TimeRaw    string // the digits as sent, signed as sent
	Nonce      string // 32 lowercase hex digits
	Signature  [sha256.Size]byte
}

// ErrMalformed is returned for an Authorization value that claims the scheme but breaks the grammar.
var ErrMalformed = errors.New("malformed " + Scheme + " authorization")

// IsSigned reports whether an Authorization value uses the signing scheme (cheap; no parsing).
func IsSigned(v string) bool {
	return len(v) > len(Scheme) && v[len(Scheme)] == ' ' && v[:len(Scheme)] == Scheme
}

// ParseAuthorization parses "PGW1-HMAC-SHA256 Credential=NAME, Timestamp=UNIX, Nonce=HEX32,
// Signature=HEX64" exactly. It does not allocate.
func ParseAuthorization(v string) (Header, error) {
	var h Header
	if !IsSigned(v) {
		return h, ErrMalformed
	}
	rest := v[len(Scheme)+1:]
	var ok bool
	var sig, ts string
	if h.Credential, rest, ok = param(rest, "Credential=", true); !ok || device.ValidateNodeName(h.Credential) != nil {
		return Header{}, ErrMalformed
	}
	if ts, rest, ok = param(rest, "Timestamp=", true); !ok || !digits(ts, maxTimestampDigits) {
		return Header{}, ErrMalformed
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return Header{}, ErrMalformed
	}
	h.Timestamp, h.TimeRaw = n, ts
	if h.Nonce, rest, ok = param(rest, "Nonce=", true); !ok || len(h.Nonce) != NonceHexLen || !lowerHex(h.Nonce) {
		return Header{}, ErrMalformed
	}
	if sig, rest, ok = param(rest, "Signature=", false); !ok || rest != "" || len(sig) != 2*sha256.Size || !lowerHex(sig) {
		return Header{}, ErrMalformed
	}
	if _, err := hex.Decode(h.Signature[:], []byte(sig)); err != nil {
		return Header{}, ErrMalformed
	}
	return h, nil
}

// param cuts "key=value" off s; when more is set the value must be followed by ", ".
func param(s, key string, more bool) (value, rest string, ok bool) {
	if !strings.HasPrefix(s, key) {
		return "", "", false
	}
	s = s[len(key):]
	if !more {
		return s, "", true
	}
	i := strings.Index(s, ", ")
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+2:], true
}

func digits(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Message is what a signature covers. Path and Query are the request target's path and query exactly as
// sent (percent-encoding untouched, no '?'); ContentType is the Content-Type header as sent, "" if none.
type Message struct {
	Method, Path, Query, ContentType string
	Timestamp                        string // decimal Unix seconds, as in the header
	Nonce                            string // 32 lowercase hex digits, as in the header
	BodySHA256                       [sha256.Size]byte
}

// Canonical returns the string to sign, for the documentation, the tests and debugging a firmware.
func (m *Message) Canonical() string { return string(m.appendCanonical(nil)) }

// appendCanonical appends the canonical string to b.
func (m *Message) appendCanonical(b []byte) []byte {
	for _, s := range [...]string{m.Method, m.Path, m.Query, m.ContentType, m.Timestamp, m.Nonce} {
		b = append(b, s...)
		b = append(b, '\n')
	}
	return hex.AppendEncode(b, m.BodySHA256[:])
}

// Sign returns HMAC-SHA256(key, canonical).
func Sign(key []byte, m *Message) [sha256.Size]byte {
	return sum(hmac.New(sha256.New, key), m)
}

// sum feeds the canonical string to mac. One buffer holds it (a few hundred bytes for a device request).
func sum(mac hash.Hash, m *Message) [sha256.Size]byte {
	_, _ = mac.Write(m.appendCanonical(make([]byte, 0, 192+len(m.Path)+len(m.Query)+len(m.ContentType))))
	var out [sha256.Size]byte
	mac.Sum(out[:0])
	return out
}

// Verify reports whether sig is key's signature of m, comparing in constant time.
func Verify(key []byte, m *Message, sig *[sha256.Size]byte) bool {
	want := Sign(key, m)
	return hmac.Equal(want[:], sig[:])
}

// Authorization formats the header value of a signed request (devices and tests).
func Authorization(name string, m *Message, sig [sha256.Size]byte) string {
	return Scheme + " Credential=" + name + ", Timestamp=" + m.Timestamp + ", Nonce=" + m.Nonce + ", Signature=" + hex.EncodeToString(sig[:])
}

// Keyed checks signatures made with one key. It reuses keyed HMAC states and canonical-string buffers
// (a sync.Pool), so a request costs the HMAC of its canonical string (about 0.4 µs) and not the key
// schedule as well (about 1 µs more, and six allocations, with hmac.New each time).
type Keyed struct {
	key  []byte
	pool sync.Pool // *keyedState
}

type keyedState struct {
	mac hash.Hash
	buf []byte
	sum [sha256.Size]byte // Sum's output: a local array would escape through the hash.Hash interface
}

// NewKeyed returns a verifier for key (which it copies).
func NewKeyed(key []byte) *Keyed {
	k := &Keyed{key: append([]byte(nil), key...)}
	k.pool.New = func() any { return &keyedState{mac: hmac.New(sha256.New, k.key), buf: make([]byte, 0, 256)} }
	return k
}

// Matches reports whether k verifies with key.
func (k *Keyed) Matches(key []byte) bool { return bytes.Equal(k.key, key) }

// Verify reports whether sig is the key's signature of m, comparing in constant time.
func (k *Keyed) Verify(m *Message, sig *[sha256.Size]byte) bool {
	st := k.pool.Get().(*keyedState)
	defer k.pool.Put(st)
	st.mac.Reset()
	st.buf = m.appendCanonical(st.buf[:0])
	_, _ = st.mac.Write(st.buf)
	st.mac.Sum(st.sum[:0])
	if cap(st.buf) > 4096 {
		st.buf = make([]byte, 0, 256) // do not keep a buffer a long path grew
	}
	return hmac.Equal(st.sum[:], sig[:])
}
