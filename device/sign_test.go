package device

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"
)

// signVector is one of the gateway's signing test vectors (internal/hmacauth/testdata/vectors.json,
// computed with openssl): this signer and the gateway's verifier are separate code, held to the same
// answers.
type signVector struct {
	Name, Key, Credential, Method, Path, Query, ContentType, Timestamp, Nonce, Body, Authorization string
}

func TestHMACSignerVectors(t *testing.T) {
	b, err := os.ReadFile("../internal/hmacauth/testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []signVector
	if err := json.Unmarshal(b, &vs); err != nil || len(vs) == 0 {
		t.Fatalf("vectors: %v", err)
	}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			s, err := NewHMACSigner(v.Credential, v.Key)
			if err != nil {
				t.Fatal(err)
			}
			ts, _ := strconv.ParseInt(v.Timestamp, 10, 64)
			nonce, _ := hex.DecodeString(v.Nonce)
			s.Now = func() time.Time { return time.Unix(ts, 0) }
			s.Rand = func(p []byte) (int, error) { return copy(p, nonce), nil }
			target := "http://192.168.1.10:6080" + v.Path
			if v.Query != "" {
				target += "?" + v.Query
			}
			var body []byte
			if v.Body != "" {
				body = []byte(v.Body)
			}
			req, err := http.NewRequest(v.Method, target, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if v.ContentType != "" {
				req.Header.Set("Content-Type", v.ContentType)
			}
			for range 2 { // the second time from a pooled HMAC
				if err := s.Sign(req, body); err != nil {
					t.Fatal(err)
				}
				if got := req.Header.Get("Authorization"); got != v.Authorization {
					t.Errorf("got %q, want %q", got, v.Authorization)
				}
			}
		})
	}
}

func TestHMACSignerFreshNonces(t *testing.T) {
	s, err := NewHMACSigner("pico-1", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 100 {
		req, _ := http.NewRequest("GET", "http://gw:6080/version", nil)
		if err := s.Sign(req, nil); err != nil {
			t.Fatal(err)
		}
		h := req.Header.Get("Authorization")
		if seen[h] {
			t.Fatalf("got the same signed header twice: %q", h)
		}
		seen[h] = true
	}
	if _, err := NewHMACSigner("pico-1", "abcd"); err == nil {
		t.Error("short key: got a signer, want an error")
	}
}

func TestConfigKey(t *testing.T) {
	base := Config{Name: "pico-1", Gateway: "http://gw:6080"}
	for _, tt := range []struct {
		name string
		cfg  func(c *Config)
		ok   bool
	}{
		{"key", func(c *Config) { c.Key = make([]byte, KeySize) }, true},
		{"short key", func(c *Config) { c.Key = make([]byte, 16) }, false},
		{"key and token", func(c *Config) { c.Key, c.Token = make([]byte, KeySize), "pgt_x" }, false},
		{"key and signer", func(c *Config) {
			c.Key, c.Signer = make([]byte, KeySize), SignerFunc(func(*http.Request, []byte) error { return nil })
		}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.cfg(&c)
			if _, err := New(c); (err == nil) != tt.ok {
				t.Errorf("got %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
