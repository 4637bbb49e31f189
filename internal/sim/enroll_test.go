package sim

import (
	"context"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/picogate/picogate/device"
	"github.com/picogate/picogate/internal/hmacauth"
	"github.com/picogate/picogate/internal/status"
)

// enrollGateway answers enrollments with the key agreement's gateway side (device's functions, as the
// gateway uses them) and then checks every other request's signature against the derived keys: a
// request that verifies proves the board runs with the key it derived, not one it was given.
type enrollGateway struct {
	priv *ecdh.PrivateKey

	mu       sync.Mutex
	keys     map[string][]byte   // name → derived key
	hardware map[string]string   // name → hardware id enrolled with
	verified map[string]struct{} // names with a verified signed request
	done     chan struct{}       // closed when want names have one
	want     int
}

func newEnrollGateway(t *testing.T, want int) (*enrollGateway, *httptest.Server) {
	priv, err := ecdh.X25519().NewPrivateKey([]byte(strings.Repeat("s", 32)))
	if err != nil {
		t.Fatal(err)
	}
	g := &enrollGateway{priv: priv, keys: map[string][]byte{}, hardware: map[string]string{}, verified: map[string]struct{}{},
		done: make(chan struct{}), want: want}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return g, srv
}

func (g *enrollGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Date", time.Now().UTC().Format(http.TimeFormat))
	body, _ := io.ReadAll(r.Body)
	g.mu.Lock()
	defer g.mu.Unlock()
	if r.URL.Path == "/picogate/v1/enroll" {
		var req struct{ Token, Name, HardwareID, Auth, EphemeralKey string }
		if err := json.Unmarshal(body, &req); err != nil || req.Auth != "hmac" || req.Token != "pge_sim001.secret" {
			status.Write(w, http.StatusBadRequest, "bad enrollment")
			return
		}
		E, _ := hex.DecodeString(req.EphemeralKey)
		pub, err := ecdh.X25519().NewPublicKey(E)
		if err != nil {
			status.Write(w, http.StatusBadRequest, "ephemeralKey")
			return
		}
		dh, _ := g.priv.ECDH(pub)
		key, confirm, err := device.DeriveKey(dh, device.EnrollTranscript(g.priv.PublicKey().Bytes(), E, req.Name, req.HardwareID, req.Token))
		if err != nil {
			status.Write(w, http.StatusBadRequest, err.Error())
			return
		}
		g.keys[req.Name], g.hardware[req.Name] = key, req.HardwareID
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]string{"name": req.Name, "auth": "hmac", "keyConfirm": hex.EncodeToString(confirm)})
		return
	}
	h, err := hmacauth.ParseAuthorization(r.Header.Get("Authorization"))
	m := &hmacauth.Message{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, ContentType: r.Header.Get("Content-Type"),
		Timestamp: h.TimeRaw, Nonce: h.Nonce, BodySHA256: sha256.Sum256(body)}
	if err != nil || g.keys[h.Credential] == nil || !hmacauth.Verify(g.keys[h.Credential], m, &h.Signature) {
		status.Write(w, http.StatusUnauthorized, "authentication required")
		return
	}
	if _, ok := g.verified[h.Credential]; !ok {
		g.verified[h.Credential] = struct{}{}
		if len(g.verified) == g.want {
			close(g.done)
		}
	}
	status.Write(w, http.StatusServiceUnavailable, "this fake gateway stops at authentication")
}

func TestEnrollingFleet(t *testing.T) {
	for _, mode := range []string{ModeAgent, ModeFirmware} {
		t.Run(mode, func(t *testing.T) {
			const boards = 3
			g, srv := newEnrollGateway(t, boards)
			s, err := New(Config{Gateway: srv.URL, Mode: mode, Enrollment: &Enrollment{
				Token: "pge_sim001.secret", GatewayKey: g.priv.PublicKey().Bytes(), Count: boards, Prefix: "sim-"}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var rep *Report
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				rep, _ = s.Run(ctx)
			}()
			select {
			case <-g.done:
			case <-time.After(30 * time.Second):
				t.Fatal("timed out waiting for a signed request from every board with its derived key")
			}
			cancel()
			<-stopped
			g.mu.Lock()
			defer g.mu.Unlock()
			ids := map[string]bool{}
			for i := 1; i <= boards; i++ {
				name := "sim-" + strconv.Itoa(i)
				if _, ok := g.verified[name]; !ok {
					t.Errorf("%s: no request signed with its derived key", name)
				}
				if hw := g.hardware[name]; hw != HardwareID(name) || ids[hw] {
					t.Errorf("%s: enrolled with hardware id %q, want %q and distinct", name, hw, HardwareID(name))
				}
				ids[g.hardware[name]] = true
			}
			if !rep.Enrolling || rep.Enrolled != boards {
				t.Errorf("report: got enrolling %v, enrolled %d; want true, %d", rep.Enrolling, rep.Enrolled, boards)
			}
			var b strings.Builder
			if err := rep.WriteText(&b); err != nil || !strings.Contains(b.String(), "enrolled            3/3 (hmac, key agreement") {
				t.Errorf("text report: got %q, %v; want the enrolled line", b.String(), err)
			}
		})
	}
}

func TestEnrollingFleetWrongPin(t *testing.T) {
	g, srv := newEnrollGateway(t, 1)
	s, err := New(Config{Gateway: srv.URL, Enrollment: &Enrollment{Token: "pge_sim001.secret", GatewayKey: make([]byte, 32), Count: 1}})
	if err != nil {
		t.Fatal(err)
	}
	// An all-zero pinned key is a low-order point: refused before anything is sent.
	rep, err := s.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "low-order") {
		t.Fatalf("got %v, want the pinned key refused", err)
	}
	if rep.Enrolled != 0 || rep.Errors["enroll"] != 1 {
		t.Fatalf("got enrolled %d, errors %v; want 0 and one enroll error", rep.Enrolled, rep.Errors)
	}

	other, _ := ecdh.X25519().NewPrivateKey([]byte(strings.Repeat("o", 32)))
	s, err = New(Config{Gateway: srv.URL, Enrollment: &Enrollment{Token: "pge_sim001.secret", GatewayKey: other.PublicKey().Bytes(), Count: 1}})
	if err != nil {
		t.Fatal(err)
	}
	rep, err = s.Run(t.Context())
	if err == nil || rep.Errors["enroll-key-not-confirmed"] != 1 || len(g.verified) != 0 {
		t.Fatalf("got %v, errors %v, %d boards running; want the keyConfirm mismatch, and no board running", err, rep.Errors, len(g.verified))
	}
}

func TestEnrollmentConfig(t *testing.T) {
	key := make([]byte, 32)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"with credentials", Config{Gateway: "http://gw", Credentials: []Credential{{Name: "a", Auth: "ip"}}, Enrollment: &Enrollment{Token: "t", GatewayKey: key, Count: 1}}, "give no credentials"},
		{"no token", Config{Gateway: "http://gw", Enrollment: &Enrollment{GatewayKey: key, Count: 1}}, "enrollment token: required"},
		{"short key", Config{Gateway: "http://gw", Enrollment: &Enrollment{Token: "t", GatewayKey: key[:31], Count: 1}}, "gateway key: 31 bytes"},
		{"no count", Config{Gateway: "http://gw", Enrollment: &Enrollment{Token: "t", GatewayKey: key}}, "count 0"},
		{"bad prefix", Config{Gateway: "http://gw", Enrollment: &Enrollment{Token: "t", GatewayKey: key, Count: 1, Prefix: "Pico_"}}, `prefix "Pico_"`},
		{"long prefix", Config{Gateway: "http://gw", Enrollment: &Enrollment{Token: "t", GatewayKey: key, Count: 10, Prefix: strings.Repeat("p", 62)}}, "63 characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
