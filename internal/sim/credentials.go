package sim

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"

	"github.com/picogate/picogate/device"
)

// Credential is one device's identity, as `picogate device add -o json`
// prints it (or one element of the array `--count N` prints).
type Credential struct {
	Name   string `json:"name"`
	Auth   string `json:"auth"`             // "token", "hmac" or "ip" (AuthNone: NamedBoards only)
	Token  string `json:"token,omitempty"`  // token mode
	Key    string `json:"key,omitempty"`    // hmac mode: the signing key, 64 hex digits
	Header string `json:"header,omitempty"` // the one header the firmware adds
	Source string `json:"source,omitempty"` // ip mode: the device's address, e.g. "127.0.0.11/32"
}

// AuthNone is a board with no credential at all, as the reference firmware is behind a proxy that
// authenticates itself upstream (nginx with a client certificate). Only NamedBoards makes one: a
// credentials file never holds it.
const AuthNone = "none"

// NamedBoards are n boards PREFIX1 … PREFIXn without a credential (AuthNone), for firmware mode
// through a proxy that needs none from them.
func NamedBoards(prefix string, n int) []Credential {
	out := make([]Credential, n)
	for i := range out {
		out[i] = Credential{Name: prefix + strconv.Itoa(i+1), Auth: AuthNone}
	}
	return out
}

// String never shows the token.
func (c Credential) String() string { return fmt.Sprintf("%s (%s)", c.Name, c.Auth) }

// key is the hmac-mode key, decoded; nil without one.
func (c Credential) key() ([]byte, error) {
	if c.Auth != "hmac" {
		return nil, nil
	}
	k, err := hex.DecodeString(c.Key)
	if err != nil || len(k) != device.KeySize {
		return nil, errors.New("auth hmac: key must be 64 hex digits")
	}
	return k, nil
}

// sourceIP is the address to dial from, for ip mode; invalid when none.
func (c Credential) sourceIP() (netip.Addr, error) {
	if c.Source == "" {
		return netip.Addr{}, nil
	}
	if p, err := netip.ParsePrefix(c.Source); err == nil {
		return p.Addr(), nil
	}
	return netip.ParseAddr(c.Source)
}

// ReadCredentials reads a credentials file: a JSON array of credentials or a
// single object.
func ReadCredentials(path string) ([]Credential, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading credentials: %w", err)
	}
	creds, err := ParseCredentials(b)
	if err != nil {
		return nil, fmt.Errorf("credentials file %s: %w", path, err)
	}
	return creds, nil
}

// ParseCredentials parses credentials JSON and checks each entry, reporting
// every problem at once (by device name, never showing a token).
func ParseCredentials(b []byte) ([]Credential, error) {
	b = bytes.TrimSpace(b)
	var creds []Credential
	switch {
	case len(b) > 0 && b[0] == '[':
		if err := json.Unmarshal(b, &creds); err != nil {
			return nil, fmt.Errorf("parsing JSON array: %w", err)
		}
	case len(b) > 0 && b[0] == '{':
		var c Credential
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("parsing JSON object: %w", err)
		}
		creds = []Credential{c}
	default:
		return nil, errors.New("want a JSON array or object, as `picogate device add -o json` prints")
	}
	var errs []error
	seen := map[string]bool{}
	for i, c := range creds {
		if c.Name == "" {
			errs = append(errs, fmt.Errorf("entry %d: no name", i))
			continue
		}
		if seen[c.Name] {
			errs = append(errs, fmt.Errorf("device %q: listed twice", c.Name))
		}
		seen[c.Name] = true
		switch c.Auth {
		case "token":
			if c.Token == "" {
				errs = append(errs, fmt.Errorf("device %q: auth token without a token", c.Name))
			}
		case "hmac":
			if _, err := c.key(); err != nil {
				errs = append(errs, fmt.Errorf("device %q: %w", c.Name, err))
			}
		case "ip":
			if c.Source == "" {
				errs = append(errs, fmt.Errorf("device %q: auth ip without a source", c.Name))
			}
		default:
			errs = append(errs, fmt.Errorf("device %q: auth %q: want token, hmac or ip", c.Name, c.Auth))
		}
		if _, err := c.sourceIP(); err != nil {
			errs = append(errs, fmt.Errorf("device %q: source %q: %w", c.Name, c.Source, err))
		}
	}
	if len(creds) == 0 {
		errs = append(errs, errors.New("no devices"))
	}
	return creds, errors.Join(errs...)
}
