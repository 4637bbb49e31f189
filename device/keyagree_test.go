package device

import (
	"bytes"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// seq returns n bytes counting up from first: the documented fixed private keys of the vectors.
func seq(first byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = first + byte(i)
	}
	return b
}

// keyAgreeVectors are the key agreement test vectors of docs/device-protocol.md, stored in
// testdata/keyagree-vectors.json. Every value is lowercase hex except the strings.
type keyAgreeVectors struct {
	Comment string       `json:"comment"`
	X25519  x25519Vector `json:"x25519"`
	Enroll  kaVector     `json:"enroll"`
	Rotate  kaVector     `json:"rotate"`
}

// x25519Vector is RFC 7748 section 6.1's Diffie-Hellman example.
type x25519Vector struct {
	AlicePrivate string `json:"alicePrivate"`
	AlicePublic  string `json:"alicePublic"`
	BobPrivate   string `json:"bobPrivate"`
	BobPublic    string `json:"bobPublic"`
	Shared       string `json:"shared"`
}

type kaVector struct {
	GatewayPrivate   string `json:"gatewayPrivate"`   // s
	GatewayKey       string `json:"gatewayKey"`       // S
	EphemeralPrivate string `json:"ephemeralPrivate"` // e
	EphemeralKey     string `json:"ephemeralKey"`     // E
	Name             string `json:"name"`
	HardwareID       string `json:"hardwareId,omitempty"`
	Token            string `json:"token,omitempty"`
	CurrentKey       string `json:"currentKey,omitempty"`
	SharedSecret     string `json:"sharedSecret"`
	TranscriptInput  string `json:"transcriptInput"` // what th hashes, spelled out byte by byte
	Transcript       string `json:"transcript"`
	Key              string `json:"key"`
	KeyConfirm       string `json:"keyConfirm"`
}

const keyAgreeVectorsFile = "testdata/keyagree-vectors.json"

// Inputs of the vectors: s = 01 02 … 20, enrollment e = 21 22 … 40, rotation e = 41 42 … 60; the
// rotation rotates the key the enrollment derived.
var (
	vecGatewayPrivate = seq(0x01, 32)
	vecEnrollE        = seq(0x21, 32)
	vecRotateE        = seq(0x41, 32)
)

const (
	vecName       = "pico-7"
	vecHardwareID = "E6614C311B5C6A2D"
	vecToken      = "pge_abc123.0123456789abcdef0123456789abcdef"
)

// computeKeyAgreeVectors derives the vectors from the fixed inputs with this package's functions, the
// board's side (KeyExchange) and the gateway's (ecdh with s, transcript, DeriveKey) checked equal.
func computeKeyAgreeVectors(t *testing.T) keyAgreeVectors {
	t.Helper()
	s, err := ecdh.X25519().NewPrivateKey(vecGatewayPrivate)
	if err != nil {
		t.Fatal(err)
	}
	S := s.PublicKey().Bytes()
	x := func(b []byte) string { return hex.EncodeToString(b) }

	// gatewaySide is what the gateway computes from s and the E it received.
	gatewaySide := func(E []byte, th func(E []byte) [32]byte) (dh []byte, tr [32]byte, key, confirm []byte) {
		pub, err := ecdh.X25519().NewPublicKey(E)
		if err != nil {
			t.Fatal(err)
		}
		if dh, err = s.ECDH(pub); err != nil {
			t.Fatal(err)
		}
		tr = th(E)
		if key, confirm, err = DeriveKey(dh, tr); err != nil {
			t.Fatal(err)
		}
		return dh, tr, key, confirm
	}

	ke, err := NewKeyExchange(S, bytes.NewReader(vecEnrollE))
	if err != nil {
		t.Fatal(err)
	}
	bKey, bConfirm, err := ke.Enroll(vecName, vecHardwareID, vecToken)
	if err != nil {
		t.Fatal(err)
	}
	dh, th, key, confirm := gatewaySide(ke.PublicKey(), func(E []byte) [32]byte {
		return EnrollTranscript(S, E, vecName, vecHardwareID, vecToken)
	})
	if !bytes.Equal(bKey, key) || !bytes.Equal(bConfirm, confirm) {
		t.Fatalf("enroll: board and gateway derived different keys or confirmations")
	}
	tok := sha256.Sum256([]byte(vecToken))
	in := transcriptInput(t, th, "picogate enroll v1", S, ke.PublicKey(), lpBytes(vecName), lpBytes(vecHardwareID), tok[:])
	enroll := kaVector{
		GatewayPrivate: x(vecGatewayPrivate), GatewayKey: x(S), EphemeralPrivate: x(vecEnrollE), EphemeralKey: x(ke.PublicKey()),
		Name: vecName, HardwareID: vecHardwareID, Token: vecToken,
		SharedSecret: x(dh), TranscriptInput: x(in), Transcript: x(th[:]), Key: x(key), KeyConfirm: x(confirm),
	}

	current := key
	kr, err := NewKeyExchange(S, bytes.NewReader(vecRotateE))
	if err != nil {
		t.Fatal(err)
	}
	bKey, bConfirm, err = kr.Rotate(vecName, current)
	if err != nil {
		t.Fatal(err)
	}
	dh, th, key, confirm = gatewaySide(kr.PublicKey(), func(E []byte) [32]byte {
		return RotateTranscript(S, E, vecName, current)
	})
	if !bytes.Equal(bKey, key) || !bytes.Equal(bConfirm, confirm) {
		t.Fatalf("rotate: board and gateway derived different keys or confirmations")
	}
	cur := sha256.Sum256(current)
	in = transcriptInput(t, th, "picogate rotate v1", S, kr.PublicKey(), lpBytes(vecName), cur[:])
	rotate := kaVector{
		GatewayPrivate: x(vecGatewayPrivate), GatewayKey: x(S), EphemeralPrivate: x(vecRotateE), EphemeralKey: x(kr.PublicKey()),
		Name: vecName, CurrentKey: x(current),
		SharedSecret: x(dh), TranscriptInput: x(in), Transcript: x(th[:]), Key: x(key), KeyConfirm: x(confirm),
	}

	// RFC 7748 section 6.1.
	alice, _ := hex.DecodeString("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	bob, _ := hex.DecodeString("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
	a, err := ecdh.X25519().NewPrivateKey(alice)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ecdh.X25519().NewPrivateKey(bob)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := a.ECDH(b.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return keyAgreeVectors{
		Comment: "picogate hmac key agreement (docs/device-protocol.md): s = 01..20, enroll e = 21..40, rotate e = 41..60 (hex bytes counting up); the rotation rotates the enrolled key. Regenerate: go test ./device -run TestKeyAgreeVectors -update",
		X25519: x25519Vector{
			AlicePrivate: x(alice), AlicePublic: x(a.PublicKey().Bytes()),
			BobPrivate: x(bob), BobPublic: x(b.PublicKey().Bytes()), Shared: x(shared),
		},
		Enroll: enroll,
		Rotate: rotate,
	}
}

// transcriptInput spells out what a transcript hashes, written here from the protocol's text rather
// than by EnrollTranscript and RotateTranscript, and checks that it hashes to th.
func transcriptInput(t *testing.T, th [32]byte, label string, parts ...[]byte) []byte {
	t.Helper()
	in := append([]byte(label), 0)
	for _, p := range parts {
		in = append(in, p...)
	}
	if sha256.Sum256(in) != th {
		t.Fatalf("%s: the transcript is not SHA-256 of the layout the protocol describes", label)
	}
	return in
}

// lpBytes is lp(s): a 2-byte big-endian length, then s.
func lpBytes(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func loadKeyAgreeVectors(t *testing.T) keyAgreeVectors {
	t.Helper()
	raw, err := os.ReadFile(keyAgreeVectorsFile)
	if err != nil {
		t.Fatalf("reading the vectors (go test ./device -run TestKeyAgreeVectors -update writes them): %v", err)
	}
	var v keyAgreeVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestKeyAgreeVectors(t *testing.T) {
	got := computeKeyAgreeVectors(t)
	if *update {
		raw, err := json.MarshalIndent(got, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(keyAgreeVectorsFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyAgreeVectorsFile, append(raw, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := loadKeyAgreeVectors(t)
	if got != want {
		g, _ := json.MarshalIndent(got, "", "  ")
		t.Fatalf("vectors changed (the protocol changed?):\ngot  %s\nwant the checked-in %s", g, keyAgreeVectorsFile)
	}
}

// TestX25519RFC7748 pins crypto/ecdh to RFC 7748's published example, so the vectors above rest on the
// standard function rather than on whatever the library computes.
func TestX25519RFC7748(t *testing.T) {
	v := loadKeyAgreeVectors(t).X25519
	want := x25519Vector{
		AlicePrivate: "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
		AlicePublic:  "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
		BobPrivate:   "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
		BobPublic:    "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
		Shared:       "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
	}
	if v != want {
		t.Fatalf("got %+v, want RFC 7748 6.1 %+v", v, want)
	}
}

func TestTranscriptBindsEveryInput(t *testing.T) {
	S, E := seq(0x01, 32), seq(0x21, 32)
	base := EnrollTranscript(S, E, "pico-7", "HW1", "pge_a.b")
	enroll := []struct {
		name string
		th   [32]byte
	}{
		{"gateway key", EnrollTranscript(seq(0x02, 32), E, "pico-7", "HW1", "pge_a.b")},
		{"ephemeral key", EnrollTranscript(S, seq(0x22, 32), "pico-7", "HW1", "pge_a.b")},
		{"name", EnrollTranscript(S, E, "pico-8", "HW1", "pge_a.b")},
		{"hardware id", EnrollTranscript(S, E, "pico-7", "HW2", "pge_a.b")},
		{"token", EnrollTranscript(S, E, "pico-7", "HW1", "pge_a.c")},
		{"name/hardware id boundary", EnrollTranscript(S, E, "pico-7H", "W1", "pge_a.b")},
	}
	for _, tc := range enroll {
		t.Run("enroll/"+tc.name, func(t *testing.T) {
			if tc.th == base {
				t.Fatalf("got the same transcript, want a change in %s to change it", tc.name)
			}
		})
	}
	cur := seq(0x41, 32)
	rbase := RotateTranscript(S, E, "pico-7", cur)
	if rbase == base {
		t.Fatal("got equal enroll and rotate transcripts")
	}
	rotate := []struct {
		name string
		th   [32]byte
	}{
		{"gateway key", RotateTranscript(seq(0x02, 32), E, "pico-7", cur)},
		{"ephemeral key", RotateTranscript(S, seq(0x22, 32), "pico-7", cur)},
		{"name", RotateTranscript(S, E, "pico-8", cur)},
		{"current key", RotateTranscript(S, E, "pico-7", seq(0x42, 32))},
	}
	for _, tc := range rotate {
		t.Run("rotate/"+tc.name, func(t *testing.T) {
			if tc.th == rbase {
				t.Fatalf("got the same transcript, want a change in %s to change it", tc.name)
			}
		})
	}
}

func TestKeyExchangeRefuses(t *testing.T) {
	s, _ := ecdh.X25519().NewPrivateKey(seq(0x01, 32))
	S := s.PublicKey().Bytes()
	// A low-order point of Curve25519 (RFC 7748 section 6.1 warns of these): every shared secret is zero.
	lowOrder, _ := hex.DecodeString("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
	tests := []struct {
		name    string
		gateway []byte
		rand    []byte
		want    string
	}{
		{"short gateway key", S[:31], seq(0x21, 32), "gateway key is 31 bytes"},
		{"short randomness", S, seq(0x21, 16), "drawing the ephemeral key"},
		{"low-order gateway key", lowOrder, seq(0x21, 32), "low-order"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := NewKeyExchange(tc.gateway, bytes.NewReader(tc.rand))
			if err == nil {
				_, _, err = k.Enroll("pico-1", "HW1", "pge_a.b")
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, _, err := DeriveKey(make([]byte, 32), [32]byte{}); err == nil {
		t.Fatal("DeriveKey: got nil for an all-zero shared secret, want an error")
	}
	if _, _, err := DeriveKey(make([]byte, 31), [32]byte{}); err == nil {
		t.Fatal("DeriveKey: got nil for a 31-byte shared secret, want an error")
	}
	k, err := NewKeyExchange(S, bytes.NewReader(seq(0x21, 32)))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := k.Enroll(strings.Repeat("n", 65536), "HW1", "pge_a.b"); err == nil {
		t.Fatal("Enroll: got nil for a 65536-byte name, want an error")
	}
}

func TestKeyExchangeFresh(t *testing.T) {
	s, _ := ecdh.X25519().NewPrivateKey(seq(0x01, 32))
	a, err := NewKeyExchange(s.PublicKey().Bytes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewKeyExchange(s.PublicKey().Bytes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.PublicKey(), b.PublicKey()) {
		t.Fatal("got the same ephemeral key twice from crypto/rand")
	}
	ka, _, err := a.Enroll("pico-1", "HW1", "pge_a.b")
	if err != nil {
		t.Fatal(err)
	}
	kb, _, err := b.Enroll("pico-1", "HW1", "pge_a.b")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ka, kb) {
		t.Fatal("got the same key from two key exchanges")
	}
	// The same exchange gives the same key again: a board polling for approval resends E.
	ka2, _, err := a.Enroll("pico-1", "HW1", "pge_a.b")
	if err != nil || !bytes.Equal(ka, ka2) {
		t.Fatalf("got %v and a different key on the second Enroll, want the same key", err)
	}
	// A public key handed out is a copy.
	p := a.PublicKey()
	p[0] ^= 1
	if bytes.Equal(p, a.PublicKey()) {
		t.Fatal("PublicKey returned the exchange's own slice")
	}
}

// BenchmarkKeyExchangeEnroll is the board's whole cost of an enrollment's key agreement: a fresh
// ephemeral key (one X25519 multiplication), the shared secret (another), transcript, HKDF, confirm.
func BenchmarkKeyExchangeEnroll(b *testing.B) {
	s, _ := ecdh.X25519().NewPrivateKey(seq(0x01, 32))
	S := s.PublicKey().Bytes()
	for b.Loop() {
		k, err := NewKeyExchange(S, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := k.Enroll("pico-7", "E6614C311B5C6A2D", "pge_abc123.secret"); err != nil {
			b.Fatal(err)
		}
	}
}
