package device

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeGateway is the gateway's side of enrollment and rotation, built from this package's key agreement
// functions the way the gateway uses them: the client's counterpart in these unit tests.
type fakeGateway struct {
	t    *testing.T
	priv *ecdh.PrivateKey
	skew time.Duration // the gateway's clock minus the real one

	mu      sync.Mutex
	keys    map[string][]byte // device → current key
	pending int               // 202s to answer before the credential
	busy    int               // 503s to answer first
	seenE   map[string]bool   // ephemeral keys received on enroll
	tamper  func(answer map[string]any)
}

func newFakeGateway(t *testing.T, s []byte) (*fakeGateway, *httptest.Server) {
	t.Helper()
	priv, err := ecdh.X25519().NewPrivateKey(s)
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGateway{t: t, priv: priv, keys: map[string][]byte{}, seenE: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /picogate/v1/enroll", g.enroll)
	mux.HandleFunc("POST /picogate/v1/rotate", g.rotate)
	mux.HandleFunc("GET /picogate/v1/time", func(w http.ResponseWriter, r *http.Request) {})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", time.Now().Add(g.skew).UTC().Format(http.TimeFormat))
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return g, srv
}

func (g *fakeGateway) publicKey() []byte { return g.priv.PublicKey().Bytes() }

func (g *fakeGateway) answer(w http.ResponseWriter, code int, v map[string]any) {
	if g.tamper != nil && code < 300 {
		g.tamper(v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (g *fakeGateway) refuse(w http.ResponseWriter, code int, msg string) {
	g.answer(w, code, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": msg, "code": code})
}

// agree is the gateway's computation: dh = X25519(s, E), then the transcript and DeriveKey.
func (g *fakeGateway) agree(ephemeralHex string, th func(E []byte) [32]byte) (key, confirm []byte, err error) {
	E, err := hex.DecodeString(ephemeralHex)
	if err != nil || len(E) != 32 {
		return nil, nil, errors.New("ephemeralKey: want 64 hex digits")
	}
	pub, err := ecdh.X25519().NewPublicKey(E)
	if err != nil {
		return nil, nil, err
	}
	dh, err := g.priv.ECDH(pub)
	if err != nil {
		return nil, nil, err
	}
	return DeriveKey(dh, th(E))
}

func (g *fakeGateway) enroll(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var req struct{ Token, Name, HardwareID, Auth, EphemeralKey string }
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		g.refuse(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Auth != "hmac" {
		g.refuse(w, http.StatusBadRequest, "want auth hmac")
		return
	}
	if req.Token != "pge_abc123.secret" {
		g.refuse(w, http.StatusUnauthorized, "enrollment token unknown")
		return
	}
	g.seenE[req.EphemeralKey] = true
	if g.busy > 0 {
		g.busy--
		w.Header().Set("Retry-After", "0")
		g.refuse(w, http.StatusServiceUnavailable, "busy")
		return
	}
	if g.pending > 0 {
		g.pending--
		w.Header().Set("Retry-After", "0")
		g.answer(w, http.StatusAccepted, map[string]any{"kind": "Status", "status": "Pending", "reason": "PendingApproval", "code": 202})
		return
	}
	key, confirm, err := g.agree(req.EphemeralKey, func(E []byte) [32]byte {
		return EnrollTranscript(g.publicKey(), E, req.Name, req.HardwareID, req.Token)
	})
	if err != nil {
		g.refuse(w, http.StatusBadRequest, err.Error())
		return
	}
	g.keys[req.Name] = key
	g.answer(w, http.StatusCreated, map[string]any{"name": req.Name, "auth": "hmac", "keyConfirm": hex.EncodeToString(confirm)})
}

func (g *fakeGateway) rotate(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	name, ts, ok := verifySigned(r, body, g.keys)
	if !ok {
		g.refuse(w, http.StatusUnauthorized, "authentication required")
		return
	}
	cur := g.keys[name]
	if d := time.Since(time.Unix(ts, 0).Add(-g.skew)); d > 30*time.Second || d < -30*time.Second {
		g.refuse(w, http.StatusUnauthorized, fmt.Sprintf("request timestamp is %s from the gateway's clock", d))
		return
	}
	var req struct{ EphemeralKey string }
	if err := json.Unmarshal(body, &req); err != nil {
		g.refuse(w, http.StatusBadRequest, err.Error())
		return
	}
	key, confirm, err := g.agree(req.EphemeralKey, func(E []byte) [32]byte {
		return RotateTranscript(g.publicKey(), E, name, cur)
	})
	if err != nil {
		g.refuse(w, http.StatusBadRequest, err.Error())
		return
	}
	g.keys[name] = key
	g.answer(w, http.StatusOK, map[string]any{"name": name, "auth": "hmac", "keyConfirm": hex.EncodeToString(confirm)})
}

// signedHeader is the Authorization of a signed request (docs/device-protocol.md, "Signed requests").
var signedHeader = regexp.MustCompile(`^PGW1-HMAC-SHA256 Credential=([a-z0-9.-]+), Timestamp=([0-9]+), Nonce=([0-9a-f]{32}), Signature=([0-9a-f]{64})$`)

// verifySigned checks a signed request the way the protocol document describes it, independently of
// HMACSigner: the device's name and the request's timestamp when the signature matches its key.
func verifySigned(r *http.Request, body []byte, keys map[string][]byte) (name string, ts int64, ok bool) {
	m := signedHeader.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil || keys[m[1]] == nil {
		return "", 0, false
	}
	bodyHash := sha256.Sum256(body)
	canonical := strings.Join([]string{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Content-Type"), m[2], m[3], hex.EncodeToString(bodyHash[:])}, "\n")
	mac := hmac.New(sha256.New, keys[m[1]])
	mac.Write([]byte(canonical))
	sig, _ := hex.DecodeString(m[4])
	ts, err := strconv.ParseInt(m[2], 10, 64)
	return m[1], ts, err == nil && hmac.Equal(mac.Sum(nil), sig)
}

func (g *fakeGateway) key(name string) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.keys[name]
}

func newTestClient(t *testing.T, gateway string, mod func(*ClientConfig)) *Client {
	t.Helper()
	cfg := ClientConfig{Gateway: gateway}
	if mod != nil {
		mod(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// noSecrets fails when err's text contains any of the secrets.
func noSecrets(t *testing.T, err error, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Fatalf("error %q contains a secret", err)
		}
	}
}

func TestClientEnroll(t *testing.T) {
	const token = "pge_abc123.secret"
	tests := []struct {
		name     string
		pending  int
		busy     int
		pin      func(real []byte) []byte
		tamper   func(map[string]any)
		timeout  time.Duration
		wantErr  string
		wantIs   error
		wantCode int // of an *APIError
	}{
		{name: "enrolled"},
		{name: "approved after two polls", pending: 2},
		{name: "busy then enrolled", busy: 1},
		{name: "wrong pinned key", pin: func([]byte) []byte { return seq(0x09, 32) }, wantIs: ErrKeyNotConfirmed},
		{name: "keyConfirm altered", tamper: func(a map[string]any) {
			b, _ := hex.DecodeString(a["keyConfirm"].(string))
			b[0] ^= 1
			a["keyConfirm"] = hex.EncodeToString(b)
		}, wantIs: ErrKeyNotConfirmed},
		{name: "keyConfirm not hex", tamper: func(a map[string]any) { a["keyConfirm"] = "zz" }, wantIs: ErrKeyNotConfirmed},
		{name: "key instead of keyConfirm", tamper: func(a map[string]any) {
			delete(a, "keyConfirm")
			a["key"] = strings.Repeat("ab", 32)
		}, wantErr: "sent a key instead of keyConfirm"},
		{name: "other device's credential", tamper: func(a map[string]any) { a["name"] = "pico-8" }, wantErr: `credential for "pico-8"`},
		{name: "token credential", tamper: func(a map[string]any) { a["auth"] = "token" }, wantErr: "want hmac"},
		{name: "waiting past the deadline", pending: 1 << 30, timeout: 300 * time.Millisecond, wantErr: "still waiting for an operator's approval", wantIs: context.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, srv := newFakeGateway(t, seq(0x01, 32))
			g.pending, g.busy, g.tamper = tc.pending, tc.busy, tc.tamper
			pin := g.publicKey()
			if tc.pin != nil {
				pin = tc.pin(pin)
			}
			ctx := t.Context()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			cred, err := newTestClient(t, srv.URL, nil).Enroll(ctx, EnrollRequest{Token: token, Name: "pico-7", HardwareID: "E6614C311B5C6A2D", GatewayKey: pin})
			if tc.wantErr == "" && tc.wantIs == nil {
				if err != nil {
					t.Fatalf("got %v, want enrolled", err)
				}
				if want := g.key("pico-7"); !bytes.Equal(cred.Key, want) || cred.Name != "pico-7" || cred.Code != http.StatusCreated {
					t.Fatalf("got %s code %d and a key equal to the gateway's: %v, want pico-7, 201, true", cred, cred.Code, bytes.Equal(cred.Key, want))
				}
				if n := len(g.seenE); n != 1 {
					t.Fatalf("got %d ephemeral keys over %d polls, want the same one every time", n, tc.pending+tc.busy+1)
				}
				return
			}
			if err == nil {
				t.Fatalf("got %s, want an error", cred)
			}
			if tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Fatalf("got %v, want %v", err, tc.wantIs)
			}
			if cred.Key != nil {
				t.Fatal("got a key with an error")
			}
			noSecrets(t, err, token, hex.EncodeToString(g.key("pico-7")))
		})
	}
}

func TestClientEnrollRefused(t *testing.T) {
	g, srv := newFakeGateway(t, seq(0x01, 32))
	_, err := newTestClient(t, srv.URL, nil).Enroll(t.Context(), EnrollRequest{Token: "pge_abc123.wrong", Name: "pico-7", HardwareID: "HW1", GatewayKey: g.publicKey()})
	if !IsCode(err, http.StatusUnauthorized) {
		t.Fatalf("got %v, want a 401 APIError", err)
	}
	noSecrets(t, err, "pge_abc123.wrong")
}

func TestClientEnrollValidates(t *testing.T) {
	ok := EnrollRequest{Token: "pge_a.b", Name: "pico-1", HardwareID: "HW1", GatewayKey: seq(1, 32)}
	tests := []struct {
		name string
		mod  func(*EnrollRequest)
		want string
	}{
		{"name", func(r *EnrollRequest) { r.Name = "Pico_1" }, "name:"},
		{"hardware id", func(r *EnrollRequest) { r.HardwareID = "has space" }, "hardware id"},
		{"long hardware id", func(r *EnrollRequest) { r.HardwareID = strings.Repeat("a", 65) }, "hardware id"},
		{"token", func(r *EnrollRequest) { r.Token = "" }, "token"},
		{"gateway key", func(r *EnrollRequest) { r.GatewayKey = seq(1, 31) }, "gateway key: 31 bytes"},
	}
	// No request may be sent: the gateway URL points nowhere.
	c := newTestClient(t, "http://127.0.0.1:1", nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			tc.mod(&r)
			if _, err := c.Enroll(t.Context(), r); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestClientRotate(t *testing.T) {
	g, srv := newFakeGateway(t, seq(0x01, 32))
	g.skew = time.Hour // a board without a real-time clock: only the gateway's time counts
	c := newTestClient(t, srv.URL, func(cfg *ClientConfig) { cfg.ServerClock = true })
	cred, err := c.Enroll(t.Context(), EnrollRequest{Token: "pge_abc123.secret", Name: "pico-7", HardwareID: "HW1", GatewayKey: g.publicKey()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		old := cred.Key
		cred, err = c.Rotate(t.Context(), RotateRequest{Name: "pico-7", Key: old, GatewayKey: g.publicKey()})
		if err != nil {
			t.Fatalf("rotation %d: %v", i+1, err)
		}
		if !bytes.Equal(cred.Key, g.key("pico-7")) || bytes.Equal(cred.Key, old) || cred.Code != http.StatusOK {
			t.Fatalf("rotation %d: got code %d, key equal to the gateway's %v, to the old one %v; want 200, true, false",
				i+1, cred.Code, bytes.Equal(cred.Key, g.key("pico-7")), bytes.Equal(cred.Key, old))
		}
	}

	t.Run("wrong pinned key", func(t *testing.T) {
		cur := g.key("pico-7")
		_, err := c.Rotate(t.Context(), RotateRequest{Name: "pico-7", Key: cur, GatewayKey: seq(0x09, 32)})
		if !errors.Is(err, ErrKeyNotConfirmed) {
			t.Fatalf("got %v, want ErrKeyNotConfirmed", err)
		}
		noSecrets(t, err, hex.EncodeToString(cur), hex.EncodeToString(g.key("pico-7")))
	})
	t.Run("wrong key", func(t *testing.T) {
		_, err := c.Rotate(t.Context(), RotateRequest{Name: "pico-7", Key: seq(0x70, 32), GatewayKey: g.publicKey()})
		if !IsCode(err, http.StatusUnauthorized) {
			t.Fatalf("got %v, want a 401 APIError", err)
		}
	})
	t.Run("without the server clock", func(t *testing.T) {
		c := newTestClient(t, srv.URL, nil)
		_, err := c.Rotate(t.Context(), RotateRequest{Name: "pico-7", Key: g.key("pico-7"), GatewayKey: g.publicKey()})
		if !IsCode(err, http.StatusUnauthorized) || !strings.Contains(err.Error(), "timestamp") {
			t.Fatalf("got %v, want a 401 about the timestamp (the gateway's clock is an hour ahead)", err)
		}
	})
}

func TestNewClientValidates(t *testing.T) {
	tests := []struct {
		name string
		cfg  ClientConfig
		want string
	}{
		{"no gateway", ClientConfig{}, "gateway: required"},
		{"bad gateway", ClientConfig{Gateway: "192.168.1.10:6080"}, "want an http:// or https:// base URL"},
		{"client timeout", ClientConfig{Gateway: "http://gw", HTTPClient: &http.Client{Timeout: time.Second}}, "Timeout must be zero"},
		{"small max body", ClientConfig{Gateway: "http://gw", MaxResponseBytes: 100}, "at least 4096"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewClient(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseGatewayKey(t *testing.T) {
	hexKey := strings.Repeat("0a", 32)
	tests := []struct {
		in string
		ok bool
	}{
		{hexKey, true},
		{" " + hexKey + "\n", true},
		{hexKey[:62], false},
		{hexKey + "00", false},
		{strings.Repeat("zz", 32), false},
	}
	for _, tc := range tests {
		t.Run(strconv.Quote(tc.in), func(t *testing.T) {
			k, err := ParseGatewayKey(tc.in)
			if (err == nil) != tc.ok || (tc.ok && len(k) != GatewayKeySize) {
				t.Fatalf("got %x, %v; want ok=%v", k, err, tc.ok)
			}
		})
	}
}

func TestCredentialHidesKey(t *testing.T) {
	c := Credential{Name: "pico-1", Key: seq(0xa0, 32), Code: 201}
	k := hex.EncodeToString(c.Key)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %s", c, c), c.LogValue().String()} {
		if strings.Contains(s, k) || strings.Contains(s, fmt.Sprintf("%v", c.Key)) {
			t.Fatalf("got %q, want no key", s)
		}
	}
}
