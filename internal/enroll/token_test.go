package enroll

import (
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/picogate/picogate/device"
)

func TestNewTokenShape(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		tok, id, err := newToken()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseToken(tok.Reveal())
		if err != nil || got != id {
			t.Fatalf("ParseToken(%q): got %q, %v; want %q", tok.Reveal(), got, err, id)
		}
		if seen[tok.Reveal()] {
			t.Fatal("got the same token twice")
		}
		seen[tok.Reveal()] = true
		if s := tok.String(); s != "[redacted]" {
			t.Errorf("String: got %q, want it redacted", s)
		}
	}
}

func TestParseToken(t *testing.T) {
	good := "pge_abc123." + strings.Repeat("a", secretLen)
	tests := []struct {
		tok string
		ok  bool
	}{
		{good, true},
		{"pgt_abc123." + strings.Repeat("a", secretLen), false},
		{"pge_abc12." + strings.Repeat("a", secretLen), false},
		{"pge_ABC123." + strings.Repeat("a", secretLen), false},
		{"pge_abc123" + strings.Repeat("a", secretLen), false},
		{"pge_abc123." + strings.Repeat("a", secretLen-1), false},
		{"pge_abc123." + strings.Repeat("a", secretLen) + "x", false},
		{"pge_abc123." + strings.Repeat("-", secretLen), false},
		{"", false},
	}
	for _, tt := range tests {
		if _, err := ParseToken(tt.tok); (err == nil) != tt.ok {
			t.Errorf("ParseToken(%q): got %v, want ok=%v", tt.tok, err, tt.ok)
		}
	}
}

func TestTokenDataRoundTrip(t *testing.T) {
	in := &TokenInfo{ID: "abc123", Expires: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Uses: 3, Used: 1, Prefix: "pico-",
		Approve: ApproveManual, Created: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC), hash: HashToken("x")}
	out, err := fromTokenData(tokenData(in))
	if err != nil {
		t.Fatal(err)
	}
	if *out != *in {
		t.Errorf("got %+v, want %+v", out, in)
	}
	now := in.Created
	for _, tt := range []struct {
		used int
		now  time.Time
		want string
	}{{1, now, "active"}, {3, now, "used up"}, {1, in.Expires, "expired"}} {
		i := *in
		i.Used = tt.used
		if got := i.State(tt.now); got != tt.want {
			t.Errorf("used %d at %v: got %q, want %q", tt.used, tt.now, got, tt.want)
		}
	}
	bad := tokenData(in)
	bad[keyUses], bad[keyApprove], bad[keyHash] = []byte("-1"), []byte("maybe"), []byte("zz")
	if _, err := fromTokenData(bad); err == nil || !strings.Contains(err.Error(), keyUses) || !strings.Contains(err.Error(), keyApprove) || !strings.Contains(err.Error(), keyHash) {
		t.Errorf("got %v, want every bad field named", err)
	}
}

func TestTokenSpecValidate(t *testing.T) {
	err := TokenSpec{TTL: -time.Second, Uses: -1, Prefix: "Pico_", Approve: "sometimes"}.Validate()
	for _, want := range []string{"--ttl", "--uses", "--prefix", "--approve"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want it to mention %s", err, want)
		}
	}
	if err := (TokenSpec{TTL: time.Hour, Prefix: "pico-"}).Validate(); err != nil {
		t.Errorf("good spec: got %v", err)
	}
	// Device names share the namespace of real nodes: a token without a prefix could name any of them.
	if err := (TokenSpec{TTL: time.Hour}).Validate(); err == nil || !strings.Contains(err.Error(), "--prefix") {
		t.Errorf("spec without a prefix: got %v, want an error about --prefix", err)
	}
}

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name, body string
		ok         bool
	}{
		{"good", `{"token":"pge_x","name":"pico-1","hardwareId":"E661","auth":"hmac"}`, true},
		{"auth omitted", `{"token":"pge_x","name":"pico-1","hardwareId":"E661"}`, true},
		{"unknown field", `{"token":"pge_x","name":"pico-1","hardwareId":"E661","extra":1}`, false},
		{"two objects", `{"token":"a"}{"token":"b"}`, false},
		{"trailing junk", `{"token":"a"} x`, false},
		{"array", `[1]`, false},
		{"empty", ``, false},
		{"too large", `{"token":"` + strings.Repeat("a", MaxRequestBytes) + `"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeRequest([]byte(tt.body))
			if (err == nil) != tt.ok {
				t.Errorf("got %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{`{"token":"pge_abc123.aaaaaaaaaaaaaaaaaaaaaaaaaa","name":"pico-1","hardwareId":"E661","auth":"hmac"}`, `{}`, `{"name":1}`, `null`, ``,
		`{"token":"pge_abc123.aaaaaaaaaaaaaaaaaaaaaaaaaa","name":"pico-1","hardwareId":"E661","auth":"hmac","ephemeralKey":"` + strings.Repeat("ab", 32) + `"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeRequest(body)
		if err != nil {
			return
		}
		if len(body) > MaxRequestBytes {
			t.Fatalf("accepted a %d-byte body", len(body))
		}
		// Whatever decodes must go through validation without panicking, and be refused unless sane.
		e := &Enroller{cfg: Config{}}
		if verr := e.validate(req, nil); verr == nil {
			if _, err := ParseToken(req.Token); err != nil || !device.ValidHardwareID(req.HardwareID) {
				t.Fatalf("validate accepted %+v", req)
			}
			if k, err := hex.DecodeString(req.EphemeralKey); req.Auth == "hmac" && (err != nil || len(k) != 32) {
				t.Fatalf("validate accepted an hmac enrollment without a 32-byte ephemeral key: %+v", req)
			}
		}
	})
}

func TestDecodeRotate(t *testing.T) {
	good := strings.Repeat("ab", 32)
	tests := []struct {
		name, body string
		ok         bool
		key        bool
	}{
		{"empty (token device)", ``, true, false},
		{"ephemeral key", `{"ephemeralKey":"` + good + `"}`, true, true},
		{"short key", `{"ephemeralKey":"abcd"}`, false, false},
		{"not hex", `{"ephemeralKey":"` + strings.Repeat("zz", 32) + `"}`, false, false},
		{"unknown field", `{"ephemeralKey":"` + good + `","key":"x"}`, false, false},
		{"trailing junk", `{"ephemeralKey":"` + good + `"} x`, false, false},
		{"no key", `{}`, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := decodeRotate([]byte(tt.body))
			if (err == nil) != tt.ok || (k != nil) != tt.key {
				t.Errorf("got %x, %v; want ok=%v key=%v", k, err, tt.ok, tt.key)
			}
		})
	}
}

func FuzzDecodeRotate(f *testing.F) {
	for _, s := range []string{``, `{"ephemeralKey":"` + strings.Repeat("ab", 32) + `"}`, `{}`, `null`, ` `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		k, err := decodeRotate(body)
		if err == nil && k != nil && len(k) != 32 {
			t.Fatalf("accepted a %d-byte ephemeral key", len(k))
		}
	})
}
