package device

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
)

// GatewayKeySize is the size of the gateway's X25519 public key, which hmac-mode firmware pins: 32 bytes,
// written as 64 lowercase hex digits.
const GatewayKeySize = 32

// Labels of the key agreement (docs/device-protocol.md, "Key agreement"). Changing any of them changes
// every derived key.
const (
	enrollLabel  = "picogate enroll v1"
	rotateLabel  = "picogate rotate v1"
	deriveInfo   = "picogate device key"
	confirmLabel = "picogate key confirm"
	maxLPLen     = 0xFFFF // the largest value a 2-byte length prefix can say
)

// EnrollTranscript returns the transcript hash th of an hmac enrollment:
//
//	SHA-256("picogate enroll v1" || 0x00 || S || E || lp(name) || lp(hardwareId) || SHA-256(token))
//
// where S is the gateway's public key, E the board's ephemeral public key and lp(x) a 2-byte big-endian
// length followed by x. Binding the token means a derived key belongs to this enrollment only; binding S
// means a board that pinned another gateway key derives another key. Name and hardwareID must be at most
// 65535 bytes (both sides refuse far shorter ones before this); a longer value is cut there, so that this
// function never fails on input the gateway has not yet validated.
func EnrollTranscript(gatewayKey, ephemeralKey []byte, name, hardwareID, token string) [32]byte {
	h := sha256.New()
	h.Write([]byte(enrollLabel))
	h.Write([]byte{0})
	h.Write(gatewayKey)
	h.Write(ephemeralKey)
	writeLP(h, name)
	writeLP(h, hardwareID)
	tok := sha256.Sum256([]byte(token))
	h.Write(tok[:])
	var th [32]byte
	h.Sum(th[:0])
	return th
}

// RotateTranscript returns the transcript hash th of an hmac key rotation:
//
//	SHA-256("picogate rotate v1" || 0x00 || S || E || lp(name) || SHA-256(currentKey))
//
// Binding the current key means only the holder of the device's key can end up with the next one, even
// if the signed request carrying E were replayed. Name follows EnrollTranscript's length rule.
func RotateTranscript(gatewayKey, ephemeralKey []byte, name string, currentKey []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(rotateLabel))
	h.Write([]byte{0})
	h.Write(gatewayKey)
	h.Write(ephemeralKey)
	writeLP(h, name)
	cur := sha256.Sum256(currentKey)
	h.Write(cur[:])
	var th [32]byte
	h.Sum(th[:0])
	return th
}

// writeLP writes lp(s): s's length as 2 bytes big-endian, then s (cut at 65535 bytes).
func writeLP(h hash.Hash, s string) {
	if len(s) > maxLPLen {
		s = s[:maxLPLen]
	}
	var n [2]byte
	binary.BigEndian.PutUint16(n[:], uint16(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

// DeriveKey returns the device key and the confirmation for a transcript, from the X25519 shared secret:
//
//	key     = HKDF-SHA256(ikm = sharedSecret, salt = transcript, info = "picogate device key", 32 bytes)
//	confirm = HMAC-SHA256(key, "picogate key confirm" || transcript)
//
// The gateway sends confirm instead of the key; a board that derives the same confirm knows the gateway
// holds the private half of the key it pinned. An all-zero shared secret (a low-order public key) is
// refused: it would make the key a function of public values only.
func DeriveKey(sharedSecret []byte, transcript [32]byte) (key, confirm []byte, err error) {
	if len(sharedSecret) != 32 {
		return nil, nil, fmt.Errorf("key agreement: the shared secret is %d bytes, want 32", len(sharedSecret))
	}
	var zero [32]byte
	if subtle.ConstantTimeCompare(sharedSecret, zero[:]) == 1 {
		return nil, nil, errors.New("key agreement: the shared secret is all zeros (a low-order public key)")
	}
	key, err = hkdf.Key(sha256.New, sharedSecret, transcript[:], deriveInfo, KeySize)
	if err != nil {
		return nil, nil, fmt.Errorf("key agreement: %w", err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(confirmLabel))
	m.Write(transcript[:])
	return key, m.Sum(nil), nil
}

// KeyExchange is the board's side: a fresh ephemeral key against a pinned gateway key. Keep one per
// enrollment (the same E is resent while the enrollment waits for approval) or per rotation; never reuse
// one for a second enrollment or rotation.
type KeyExchange struct {
	gatewayKey []byte
	gateway    *ecdh.PublicKey
	priv       *ecdh.PrivateKey
	pub        []byte
}

// NewKeyExchange returns a key exchange with a fresh ephemeral key drawn from rand (nil: crypto/rand)
// against gatewayKey, the gateway's 32-byte public key the firmware pinned. It reads exactly 32 bytes
// from rand and uses them as the X25519 private key (RFC 7748 clamps them), so fixed bytes give the
// documented test vectors.
func NewKeyExchange(gatewayKey []byte, rand io.Reader) (*KeyExchange, error) {
	if len(gatewayKey) != GatewayKeySize {
		return nil, fmt.Errorf("key agreement: the gateway key is %d bytes, want %d", len(gatewayKey), GatewayKeySize)
	}
	gw, err := ecdh.X25519().NewPublicKey(gatewayKey)
	if err != nil {
		return nil, fmt.Errorf("key agreement: gateway key: %w", err)
	}
	if rand == nil {
		rand = cryptoRand{}
	}
	var e [32]byte
	if _, err := io.ReadFull(rand, e[:]); err != nil {
		return nil, fmt.Errorf("key agreement: drawing the ephemeral key: %w", err)
	}
	priv, err := ecdh.X25519().NewPrivateKey(e[:])
	clear(e[:])
	if err != nil {
		return nil, fmt.Errorf("key agreement: ephemeral key: %w", err)
	}
	return &KeyExchange{
		gatewayKey: append([]byte(nil), gatewayKey...),
		gateway:    gw,
		priv:       priv,
		pub:        priv.PublicKey().Bytes(),
	}, nil
}

// cryptoRand reads from crypto/rand.Read, which never fails.
type cryptoRand struct{}

func (cryptoRand) Read(p []byte) (int, error) { return rand.Read(p) }

// PublicKey returns E, the ephemeral public key the board sends as "ephemeralKey" (32 bytes; a copy).
func (k *KeyExchange) PublicKey() []byte { return append([]byte(nil), k.pub...) }

// Enroll returns the device key and the confirmation the gateway must answer for an enrollment of name
// and hardwareID with token.
func (k *KeyExchange) Enroll(name, hardwareID, token string) (key, confirm []byte, err error) {
	if len(name) > maxLPLen || len(hardwareID) > maxLPLen {
		return nil, nil, errors.New("key agreement: name and hardware id must be at most 65535 bytes")
	}
	dh, err := k.sharedSecret()
	if err != nil {
		return nil, nil, err
	}
	defer clear(dh)
	return DeriveKey(dh, EnrollTranscript(k.gatewayKey, k.pub, name, hardwareID, token))
}

// Rotate returns the next device key and the confirmation the gateway must answer for a rotation of
// name's current key.
func (k *KeyExchange) Rotate(name string, currentKey []byte) (key, confirm []byte, err error) {
	if len(name) > maxLPLen {
		return nil, nil, errors.New("key agreement: name must be at most 65535 bytes")
	}
	dh, err := k.sharedSecret()
	if err != nil {
		return nil, nil, err
	}
	defer clear(dh)
	return DeriveKey(dh, RotateTranscript(k.gatewayKey, k.pub, name, currentKey))
}

// sharedSecret is X25519(e, S); crypto/ecdh refuses the all-zero result of a low-order gateway key.
func (k *KeyExchange) sharedSecret() ([]byte, error) {
	dh, err := k.priv.ECDH(k.gateway)
	if err != nil {
		return nil, fmt.Errorf("key agreement: the gateway key is not usable (a low-order point): %w", err)
	}
	return dh, nil
}
