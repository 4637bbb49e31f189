package device

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// KeySize is the size of an hmac-mode device key: 256 bits.
const KeySize = 32

// signScheme is the Authorization scheme of a signed request.
const signScheme = "PGW1-HMAC-SHA256"

// HMACSigner signs requests for the gateway's hmac auth mode: every request carries
//
//	Authorization: PGW1-HMAC-SHA256 Credential=NAME, Timestamp=UNIX, Nonce=HEX32, Signature=HEX64
//
// where the signature is HMAC-SHA256 with the device key over
//
//	METHOD \n PATH \n QUERY \n CONTENT-TYPE \n TIMESTAMP \n NONCE \n hex(sha256(BODY))
//
// (PATH and QUERY exactly as sent, CONTENT-TYPE the header's value or empty). A sniffed signed request
// cannot be altered, and the gateway accepts it once, within 30 s of its timestamp. docs/device-protocol.md
// describes the format with a worked example; the gateway checks it independently of this code, against
// the same test vectors.
//
// It uses only crypto/hmac, crypto/sha256 and crypto/rand, which TinyGo provides on the RP2040.
type HMACSigner struct {
	// Name is the device's node name.
	Name string
	// Key is the device's 32-byte key (the hex "key" of `picogate device add --auth hmac -o json` or of
	// an enrollment, decoded).
	Key []byte
	// Now is the clock the timestamp comes from; default time.Now. A board without a real-time clock
	// must use a clock set from the gateway (the agent's own, with Config.ServerClock).
	Now func() time.Time
	// Rand fills the nonce; default crypto/rand.Read.
	Rand func([]byte) (int, error)

	once sync.Once
	pool sync.Pool // hash.Hash keyed with Key, reset between requests
}

// NewHMACSigner returns a signer for a device name and its key in hex.
func NewHMACSigner(name, keyHex string) (*HMACSigner, error) {
	k, err := hex.DecodeString(keyHex)
	if err != nil || len(k) != KeySize {
		return nil, fmt.Errorf("hmac key: want %d hex digits", 2*KeySize)
	}
	return &HMACSigner{Name: name, Key: k}, nil
}

// Sign adds the Authorization header to req; body is its exact body (nil for none).
func (s *HMACSigner) Sign(req *http.Request, body []byte) error {
	v, err := s.Authorization(req.Method, req.URL.EscapedPath(), req.URL.RawQuery, req.Header.Get("Content-Type"), body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", v)
	return nil
}

// Authorization returns the Authorization header value for a request, for callers that write requests
// themselves: path and query exactly as they will be sent (query without '?'), ctype the Content-Type
// header's value or "". The key must not change once the signer has been used.
func (s *HMACSigner) Authorization(method, path, query, ctype string, body []byte) (string, error) {
	if len(s.Key) != KeySize {
		return "", errors.New("hmac signer: the key must be 32 bytes")
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	read := rand.Read
	if s.Rand != nil {
		read = s.Rand
	}
	var n [16]byte
	if _, err := read(n[:]); err != nil {
		return "", fmt.Errorf("hmac signer: nonce: %w", err)
	}
	var nonce [32]byte
	hex.Encode(nonce[:], n[:])
	ts := strconv.FormatInt(now().Unix(), 10)
	sig := s.signature(method, path, query, ctype, ts, string(nonce[:]), body)
	return signScheme + " Credential=" + s.Name + ", Timestamp=" + ts + ", Nonce=" + string(nonce[:]) + ", Signature=" + sig, nil
}

// signature is hex(HMAC-SHA256(key, canonical string)).
func (s *HMACSigner) signature(method, path, query, ctype, ts, nonce string, body []byte) string {
	s.once.Do(func() { s.pool.New = func() any { return hmac.New(sha256.New, s.Key) } })
	mac := s.pool.Get().(hash.Hash)
	defer s.pool.Put(mac)
	mac.Reset()
	bh := sha256.Sum256(body)
	var bhex [2 * sha256.Size]byte
	hex.Encode(bhex[:], bh[:])
	for _, part := range [...]string{method, path, query, ctype, ts, nonce} {
		mac.Write([]byte(part))
		mac.Write([]byte{'\n'})
	}
	mac.Write(bhex[:])
	var sum [sha256.Size]byte
	return hex.EncodeToString(mac.Sum(sum[:0]))
}
