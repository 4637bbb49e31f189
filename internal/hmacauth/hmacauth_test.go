package hmacauth

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/picogate/picogate/device"
)

// Vector is one signing test vector of testdata/vectors.json (computed with openssl, independently of
// this package). device/ checks its own signer against the same file, and docs/device-protocol.md shows
// the first one.
type Vector struct {
	Name, Key, Credential, Method, Path, Query, ContentType, Timestamp, Nonce, Body string
	BodySHA256, Canonical, Signature, Authorization                                 string
}

func loadVectors(t testing.TB) []Vector {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []Vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	return vs
}

func (v Vector) message(t testing.TB) (*Message, []byte) {
	t.Helper()
	key, err := hex.DecodeString(v.Key)
	if err != nil || len(key) != device.KeySize {
		t.Fatalf("%s: bad key", v.Name)
	}
	return &Message{Method: v.Method, Path: v.Path, Query: v.Query, ContentType: v.ContentType,
		Timestamp: v.Timestamp, Nonce: v.Nonce, BodySHA256: sha256.Sum256([]byte(v.Body))}, key
}

func TestVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			m, key := v.message(t)
			if got := hex.EncodeToString(m.BodySHA256[:]); got != v.BodySHA256 {
				t.Errorf("body hash: got %s, want %s", got, v.BodySHA256)
			}
			if got := m.Canonical(); got != v.Canonical {
				t.Errorf("canonical: got %q, want %q", got, v.Canonical)
			}
			sig := Sign(key, m)
			if got := hex.EncodeToString(sig[:]); got != v.Signature {
				t.Errorf("signature: got %s, want %s", got, v.Signature)
			}
			if got := Authorization(v.Credential, m, sig); got != v.Authorization {
				t.Errorf("authorization: got %q, want %q", got, v.Authorization)
			}
			h, err := ParseAuthorization(v.Authorization)
			if err != nil {
				t.Fatalf("parsing the vector's header: %v", err)
			}
			if h.Credential != v.Credential || h.TimeRaw != v.Timestamp || h.Nonce != v.Nonce || !Verify(key, m, &h.Signature) || !NewKeyed(key).Verify(m, &h.Signature) {
				t.Errorf("parsed %+v: want the vector's fields and a valid signature", h)
			}
		})
	}
}

// TestVerifyRefusesTampering changes each signed field in turn.
func TestVerifyRefusesTampering(t *testing.T) {
	v := loadVectors(t)[0]
	base, key := v.message(t)
	h, _ := ParseAuthorization(v.Authorization)
	tamper := map[string]func(m *Message){
		"method":       func(m *Message) { m.Method = "PUT" },
		"path":         func(m *Message) { m.Path = "/api/v1/nodes/pico-2/status" },
		"query":        func(m *Message) { m.Query = "dryRun=All" },
		"content type": func(m *Message) { m.ContentType = "application/merge-patch+json" },
		"timestamp":    func(m *Message) { m.Timestamp = "1764579601" },
		"nonce":        func(m *Message) { m.Nonce = "00112233445566778899aabbccddeefe" },
		"body":         func(m *Message) { m.BodySHA256 = sha256.Sum256([]byte(v.Body + " ")) },
	}
	for name, f := range tamper {
		t.Run(name, func(t *testing.T) {
			m := *base
			f(&m)
			if Verify(key, &m, &h.Signature) || NewKeyed(key).Verify(&m, &h.Signature) {
				t.Error("got valid, want the tampered request refused")
			}
		})
	}
	other := append([]byte(nil), key...)
	other[0] ^= 1
	if Verify(other, base, &h.Signature) {
		t.Error("another key: got valid, want refused")
	}
}

func TestParseAuthorization(t *testing.T) {
	good := "PGW1-HMAC-SHA256 Credential=pico-1, Timestamp=1764579600, Nonce=00112233445566778899aabbccddeeff, Signature=" + strings.Repeat("ab", 32)
	tests := []struct {
		name, v string
		ok      bool
	}{
		{"good", good, true},
		{"bearer", "Bearer pgt_x", false},
		{"scheme lowercase", strings.Replace(good, "PGW1-HMAC-SHA256", "pgw1-hmac-sha256", 1), false},
		{"two spaces after scheme", strings.Replace(good, "SHA256 ", "SHA256  ", 1), false},
		{"no space after comma", strings.Replace(good, ", Timestamp", ",Timestamp", 1), false},
		{"order", "PGW1-HMAC-SHA256 Timestamp=1764579600, Credential=pico-1, Nonce=00112233445566778899aabbccddeeff, Signature=" + strings.Repeat("ab", 32), false},
		{"missing nonce", "PGW1-HMAC-SHA256 Credential=pico-1, Timestamp=1764579600, Signature=" + strings.Repeat("ab", 32), false},
		{"trailing junk", good + ", Extra=1", false},
		{"trailing space", good + " ", false},
		{"uppercase hex signature", strings.Replace(good, strings.Repeat("ab", 32), strings.Repeat("AB", 32), 1), false},
		{"short signature", good[:len(good)-2], false},
		{"short nonce", strings.Replace(good, "00112233445566778899aabbccddeeff", "0011", 1), false},
		{"negative timestamp", strings.Replace(good, "1764579600", "-1764579600", 1), false},
		{"huge timestamp", strings.Replace(good, "1764579600", "99999999999999999999", 1), false},
		{"empty timestamp", strings.Replace(good, "1764579600", "", 1), false},
		{"name with uppercase", strings.Replace(good, "pico-1", "Pico-1", 1), false},
		{"name with comma", strings.Replace(good, "pico-1", "pico,1", 1), false},
		{"empty name", strings.Replace(good, "pico-1", "", 1), false},
		{"scheme only", "PGW1-HMAC-SHA256 ", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseAuthorization(tt.v)
			if (err == nil) != tt.ok {
				t.Fatalf("got err %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && (h.Credential != "pico-1" || h.Timestamp != 1764579600 || h.Signature[0] != 0xab) {
				t.Errorf("got %+v, want the header's fields", h)
			}
		})
	}
}

func TestParseAuthorizationDoesNotAllocate(t *testing.T) {
	v := loadVectors(t)[0].Authorization
	if n := testing.AllocsPerRun(100, func() { _, _ = ParseAuthorization(v) }); n != 0 {
		t.Errorf("got %v allocations, want 0", n)
	}
}

func TestNonceCache(t *testing.T) {
	n := func(i int) string {
		return strings.Repeat("0", NonceHexLen-4) + hex.EncodeToString([]byte{byte(i >> 8), byte(i)})
	}
	c := NewNonceCache(3)
	const now = 1000
	steps := []struct {
		nonce        string
		expires, now int64
		want         error
	}{
		{n(1), now + 30, now, nil},
		{n(1), now + 30, now, ErrReplay},
		{n(1), now + 30, now + 30, ErrReplay}, // still inside the window
		{n(2), now + 30, now, nil},
		{n(3), now + 5, now, nil},
		{n(4), now + 30, now, ErrCacheFull},      // three live nonces: refuse rather than forget one
		{n(4), now + 40, now + 10, nil},          // n(3) has left the window and is forgotten
		{n(3), now + 40, now + 10, ErrCacheFull}, // forgotten, but n(1), n(2), n(4) are live: still full
		{n(1), now + 61, now + 31, nil},          // n(1) and n(2) have left the window and are swept
		{n(3), now + 61, now + 31, nil},
		{n(4), now + 61, now + 31, ErrReplay}, // n(4) is live until now+40
	}
	for i, s := range steps {
		if got := c.Add(s.nonce, s.expires, s.now); got != s.want {
			t.Fatalf("step %d: got %v, want %v", i, got, s.want)
		}
	}
	if c.Len() > 3 {
		t.Errorf("got %d nonces, want at most 3", c.Len())
	}
}

func FuzzParseAuthorization(f *testing.F) {
	for _, v := range []string{
		"PGW1-HMAC-SHA256 Credential=pico-1, Timestamp=1764579600, Nonce=00112233445566778899aabbccddeeff, Signature=c33fe991e1040eaac2712900012b5b58435da0f43fcbffe58fc81a67527f1f4c",
		"PGW1-HMAC-SHA256 Credential=, Timestamp=, Nonce=, Signature=",
		"PGW1-HMAC-SHA256 ", "Bearer x", "",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		h, err := ParseAuthorization(v)
		if err != nil {
			return
		}
		// Whatever parses must format back to exactly the input: the grammar has one spelling.
		m := &Message{Timestamp: h.TimeRaw, Nonce: h.Nonce}
		if got := Authorization(h.Credential, m, h.Signature); got != v {
			t.Fatalf("parsed %q, formats back as %q", v, got)
		}
		if h.Timestamp < 0 || len(h.Nonce) != NonceHexLen {
			t.Fatalf("parsed %q into out-of-range fields %+v", v, h)
		}
	})
}

// BenchmarkVerify is the signing work per request the gateway adds in hmac mode: header parse, body
// hash, HMAC of the canonical string, constant-time compare, nonce cache insert. "keyed" is what the
// gateway does (a Keyed verifier per device); "new" builds the HMAC from the key each time.
func BenchmarkVerify(b *testing.B) {
	for _, keyed := range []bool{true, false} {
		b.Run(map[bool]string{true: "keyed", false: "new"}[keyed], func(b *testing.B) { benchVerify(b, keyed) })
	}
}

func benchVerify(b *testing.B, keyed bool) {
	v := loadVectors(b)[0]
	key, _ := hex.DecodeString(v.Key)
	body := []byte(v.Body)
	c := NewNonceCache(0)
	h, _ := ParseAuthorization(v.Authorization)
	k := NewKeyed(key)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		hh, err := ParseAuthorization(v.Authorization)
		if err != nil {
			b.Fatal(err)
		}
		m := Message{Method: v.Method, Path: v.Path, Query: v.Query, ContentType: v.ContentType, Timestamp: hh.TimeRaw, Nonce: hh.Nonce, BodySHA256: sha256.Sum256(body)}
		if ok := (keyed && k.Verify(&m, &h.Signature)) || (!keyed && Verify(key, &m, &h.Signature)); !ok {
			b.Fatal("invalid")
		}
		var nonce [NonceHexLen]byte
		hex.Encode(nonce[:], []byte{byte(i >> 56), byte(i >> 48), byte(i >> 40), byte(i >> 32), byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i), 1, 2, 3, 4, 5, 6, 7, 8})
		_ = c.Add(string(nonce[:]), int64(i), int64(i)) // expiring at once keeps the cache at its steady size
	}
}

// TestKeyedVerifyDoesNotAllocate: the gateway's per-request signature work is allocation-free once a
// device's verifier is warm.
func TestKeyedVerifyDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under -race")
	}
	v := loadVectors(t)[0]
	m, key := v.message(t)
	h, _ := ParseAuthorization(v.Authorization)
	k := NewKeyed(key)
	c := NewNonceCache(0)
	k.Verify(m, &h.Signature)
	now := int64(0)
	if n := testing.AllocsPerRun(200, func() {
		now++ // each run's nonce has expired by the next, so the cache does not grow
		if !k.Verify(m, &h.Signature) || c.Add(v.Nonce, now, now) != nil {
			t.Fatal("verification failed")
		}
	}); n != 0 {
		t.Errorf("got %v allocations per verification, want 0", n)
	}
}
