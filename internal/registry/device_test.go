package registry

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	tok := &Device{Name: "pico-1", Created: now}
	if _, err := IssueCredential(tok, AuthToken); err != nil {
		t.Fatal(err)
	}
	if _, err := IssueNext(tok); err != nil {
		t.Fatal(err)
	}
	hm := &Device{Name: "pico-2", Created: now, HardwareID: "E6614C31", EnrolledBy: "abc123"}
	if _, err := IssueCredential(hm, AuthHMAC); err != nil {
		t.Fatal(err)
	}
	pending := &Device{Name: "pico-3", Auth: AuthHMAC, Created: now, HardwareID: "HW-3", EnrolledBy: "abc123",
		Enrollment: &Enrollment{Requested: now, Approved: now.Add(time.Minute), Auth: AuthHMAC, TokenHash: HashToken("pge_x"),
			EphemeralKey: bytes.Repeat([]byte{0xe5}, KeySize)}}
	for _, d := range []*Device{tok, hm, pending} {
		t.Run(d.Name, func(t *testing.T) {
			got, err := fromSecretData(secretData(d))
			if err != nil {
				t.Fatalf("decoding what secretData wrote: %v", err)
			}
			if got.Auth != d.Auth || got.TokenHash != d.TokenHash || got.NextTokenHash != d.NextTokenHash ||
				!bytes.Equal(got.Key, d.Key) || !bytes.Equal(got.NextKey, d.NextKey) || got.HardwareID != d.HardwareID ||
				got.EnrolledBy != d.EnrolledBy || !got.Created.Equal(d.Created) || (got.Enrollment == nil) != (d.Enrollment == nil) {
				t.Errorf("got %+v, want %+v", got, d)
			}
			if e, w := got.Enrollment, d.Enrollment; w != nil && (!e.Requested.Equal(w.Requested) || !e.Approved.Equal(w.Approved) ||
				e.Auth != w.Auth || e.TokenHash != w.TokenHash || !bytes.Equal(e.EphemeralKey, w.EphemeralKey)) {
				t.Errorf("got enrollment %+v, want %+v", got.Enrollment, d.Enrollment)
			}
		})
	}
	if pending.HasCredential() {
		t.Error("a pending enrollment of a new device: got HasCredential, want none")
	}
}

func TestRecordValidation(t *testing.T) {
	base := func() map[string][]byte {
		return map[string][]byte{keyName: []byte("pico-1"), keyAuth: []byte("hmac"), keyCreated: []byte("2026-12-01T09:00:00Z"),
			keyKey: []byte(strings.Repeat("ab", KeySize))}
	}
	tests := []struct {
		name   string
		change func(map[string][]byte)
		want   string
	}{
		{"good", func(map[string][]byte) {}, ""},
		{"short key", func(m map[string][]byte) { m[keyKey] = []byte("abcd") }, "hmac-key"},
		{"no key", func(m map[string][]byte) { delete(m, keyKey) }, "hmac-key"},
		{"no key but pending", func(m map[string][]byte) {
			delete(m, keyKey)
			m[keyPending], m[keyPendingAuth] = []byte("2026-12-01T09:00:00Z"), []byte("hmac")
			m[keyPendingToken] = []byte(strings.Repeat("00", 32))
		}, ""},
		{"bad next key", func(m map[string][]byte) { m[keyKeyNext] = []byte("zz") }, "hmac-key-next"},
		{"pending without token hash", func(m map[string][]byte) {
			m[keyPending], m[keyPendingAuth] = []byte("2026-12-01T09:00:00Z"), []byte("hmac")
		}, "enroll-token-sha256"},
		{"pending for ip", func(m map[string][]byte) {
			m[keyPending], m[keyPendingAuth] = []byte("2026-12-01T09:00:00Z"), []byte("ip")
			m[keyPendingToken] = []byte(strings.Repeat("00", 32))
		}, "enroll-auth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base()
			tt.change(m)
			_, err := fromSecretData(m)
			if tt.want == "" && err != nil {
				t.Fatalf("got %v, want valid", err)
			}
			if tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("got %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

func TestPromoteNext(t *testing.T) {
	d := &Device{Name: "pico-1"}
	if _, err := IssueCredential(d, AuthHMAC); err != nil {
		t.Fatal(err)
	}
	old := d.Key
	if promoteNext(d, old) {
		t.Error("no rotation pending: got promoted, want unchanged")
	}
	if _, err := IssueNext(d); err != nil {
		t.Fatal(err)
	}
	next := d.NextKey
	if promoteNext(d, old) {
		t.Error("used the current key: got promoted, want unchanged")
	}
	if !promoteNext(d, next) || !bytes.Equal(d.Key, next) || d.NextKey != nil || d.Rotating() {
		t.Errorf("used the next key: got key %x next %x, want the next key current and no rotation", d.Key, d.NextKey)
	}
	tok := &Device{Name: "pico-2"}
	if _, err := IssueCredential(tok, AuthToken); err != nil {
		t.Fatal(err)
	}
	if _, err := IssueNext(tok); err != nil {
		t.Fatal(err)
	}
	h := tok.NextTokenHash
	if !promoteNext(tok, h[:]) || tok.TokenHash != h || tok.Rotating() {
		t.Error("token rotation: got not promoted, want the next hash current")
	}
	ip := &Device{Name: "pico-3", Auth: AuthIP}
	if _, err := IssueNext(ip); err == nil {
		t.Error("ip device: got a rotation, want an error")
	}
}
