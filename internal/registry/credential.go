package registry

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
)

// Credential is what a new or rotated device needs, returned once and never stored.
type Credential struct {
	Name  string   `json:"name"`
	Auth  AuthMode `json:"auth"`
	Token string   `json:"token,omitempty"`
	Key   string   `json:"key,omitempty"` // hmac mode, operator-issued: the 256-bit signing key, 64 lowercase hex digits
	// KeyConfirm (hmac mode, enrolled or rotated by the device) replaces Key: the device derived the key
	// itself by key agreement, and this HMAC proves the gateway derived the same one (64 hex digits).
	KeyConfirm string `json:"keyConfirm,omitempty"`
	Header     string `json:"header,omitempty"` // the one header the firmware must add (token mode)
	Source     string `json:"source,omitempty"`
}

// LogValue redacts the token and key.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", c.Name), slog.String("auth", string(c.Auth)))
}

// NewKey returns a fresh hmac-mode device key: 256 random bits.
func NewKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	return k, nil
}

// IssueCredential gives d a fresh credential of mode (token or hmac), replacing its current one and any
// pending rotation, and returns it for the one answer that shows it.
func IssueCredential(d *Device, mode AuthMode) (Credential, error) {
	d.Auth = mode
	d.TokenHash, d.NextTokenHash, d.Key, d.NextKey = [sha256.Size]byte{}, [sha256.Size]byte{}, nil, nil
	cred := Credential{Name: d.Name, Auth: mode}
	if d.Source.IsValid() {
		cred.Source = d.Source.String()
	}
	switch mode {
	case AuthToken:
		tok, err := NewToken()
		if err != nil {
			return Credential{}, err
		}
		d.TokenHash = HashToken(tok.Reveal())
		cred.Token, cred.Header = tok.Reveal(), "Authorization: Bearer "+tok.Reveal()
	case AuthHMAC:
		k, err := NewKey()
		if err != nil {
			return Credential{}, err
		}
		d.Key, cred.Key = k, hex.EncodeToString(k)
	case AuthIP:
	default:
		return Credential{}, fmt.Errorf("unknown auth mode %q: want token, hmac or ip", mode)
	}
	return cred, nil
}

// IssueNext gives d a second credential of its mode, valid alongside the current one until its first use
// promotes it (PromoteNext). A rotation not yet used is replaced.
func IssueNext(d *Device) (Credential, error) {
	cred := Credential{Name: d.Name, Auth: d.Auth}
	switch d.Auth {
	case AuthToken:
		tok, err := NewToken()
		if err != nil {
			return Credential{}, err
		}
		d.NextTokenHash = HashToken(tok.Reveal())
		cred.Token, cred.Header = tok.Reveal(), "Authorization: Bearer "+tok.Reveal()
	case AuthHMAC:
		k, err := NewKey()
		if err != nil {
			return Credential{}, err
		}
		d.NextKey, cred.Key = k, hex.EncodeToString(k)
	default:
		return Credential{}, fmt.Errorf("device %q uses auth %s: it has no credential to rotate", d.Name, d.Auth)
	}
	return cred, nil
}

// IssueAgreedKey gives d the hmac key it and the gateway derived by key agreement, replacing its current
// credential and any pending rotation. The answer carries only the confirmation: the key never leaves
// the gateway.
func IssueAgreedKey(d *Device, key, confirm []byte) Credential {
	d.Auth = AuthHMAC
	d.TokenHash, d.NextTokenHash, d.Key, d.NextKey = [sha256.Size]byte{}, [sha256.Size]byte{}, bytes.Clone(key), nil
	return Credential{Name: d.Name, Auth: AuthHMAC, KeyConfirm: hex.EncodeToString(confirm), Source: sourceText(d)}
}

// IssueAgreedNext gives hmac device d a derived key as its next key, valid alongside the current one
// until its first use promotes it. signedWith is the key the rotation request was signed with: if that
// was the pending next key, it becomes the current one first, so the key the device holds stays valid
// whatever becomes of this rotation's answer.
func IssueAgreedNext(d *Device, signedWith, key, confirm []byte) Credential {
	if len(d.NextKey) > 0 && bytes.Equal(signedWith, d.NextKey) {
		d.Key = d.NextKey
	}
	d.NextKey = bytes.Clone(key)
	return Credential{Name: d.Name, Auth: AuthHMAC, KeyConfirm: hex.EncodeToString(confirm)}
}

func sourceText(d *Device) string {
	if d.Source.IsValid() {
		return d.Source.String()
	}
	return ""
}

// promoteNext makes the pending rotation d's credential if used is that rotation (the token hash or the
// key the device just used); it reports whether d changed.
func promoteNext(d *Device, used []byte) bool {
	switch {
	case d.Auth == AuthToken && d.Rotating() && string(used) == string(d.NextTokenHash[:]):
		d.TokenHash, d.NextTokenHash = d.NextTokenHash, [sha256.Size]byte{}
	case d.Auth == AuthHMAC && len(d.NextKey) > 0 && string(used) == string(d.NextKey):
		d.Key, d.NextKey = d.NextKey, nil
	default:
		return false
	}
	return true
}
