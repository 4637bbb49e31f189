package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/picogate/picogate/device"
	"github.com/picogate/picogate/internal/gatewaytest"
)

// keyAgreeToken creates an enrollment token and returns it with the gateway public key token create
// prints for the firmware to pin.
func keyAgreeToken(t *testing.T, args ...string) (token string, gatewayKey []byte) {
	t.Helper()
	var out struct{ Token, GatewayKey string }
	raw := picogate(t, append([]string{"token", "create", "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(raw), &out); err != nil || out.Token == "" {
		t.Fatalf("token create -o json: got %q (%v), want a token", raw, err)
	}
	k, err := device.ParseGatewayKey(out.GatewayKey)
	if err != nil {
		t.Fatalf("token create -o json: gatewayKey %q: %v", out.GatewayKey, err)
	}
	return out.Token, k
}

// tapRelay forwards loopback TCP connections to the gateway and keeps every byte that passes in either
// direction: what a passive observer of the LAN sees.
type tapRelay struct {
	ln    net.Listener
	mu    sync.Mutex
	b     bytes.Buffer
	conns map[net.Conn]struct{} // open, closed at cleanup (a client's idle keep-alive would wait)
	wg    sync.WaitGroup
}

func startTapRelay(t *testing.T, target string) *tapRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &tapRelay{ln: ln, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns[c] = struct{}{}
			r.mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.relay(c, target)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *tapRelay) relay(c net.Conn, target string) {
	defer func() {
		c.Close()
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
	}()
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(io.MultiWriter(dst, r), src)
		// One side finished: end both, so the other copy returns too.
		_ = c.SetDeadline(time.Now())
		_ = up.SetDeadline(time.Now())
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

// Write records bytes passing through.
func (r *tapRelay) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.b.Write(p)
}

func (r *tapRelay) captured() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.b.Bytes())
}

// keyForms are the ways a key could show up in traffic: raw, hex either case, base64.
func keyForms(k []byte) [][]byte {
	h := hex.EncodeToString(k)
	return [][]byte{k, []byte(h), []byte(strings.ToUpper(h)),
		[]byte(base64.StdEncoding.EncodeToString(k)), []byte(base64.RawURLEncoding.EncodeToString(k))}
}

// TestKeyAgreementThroughTheGateway: a board enrolls with the device library (hmac, key agreement
// with the pinned gateway key), signs requests with the key it derived, rotates it and signs with the
// next one; the gateway's view and the board's agree. Everything passes a relay that records every byte,
// and neither key appears in the recording: a passive observer of the LAN cannot take them.
func TestKeyAgreementThroughTheGateway(t *testing.T) {
	gw := startEnrollmentGateway(t)
	token, gatewayKey := keyAgreeToken(t, "--ttl", "10m", "--uses", "1", "--prefix", "ka-")
	tap := startTapRelay(t, gw.Addr)
	client, err := device.NewClient(device.ClientConfig{Gateway: "http://" + tap.ln.Addr().String(), ServerClock: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cred, err := client.Enroll(ctx, device.EnrollRequest{Token: token, Name: "ka-1", HardwareID: "E6614C311B5C6A2E", GatewayKey: gatewayKey})
	if err != nil {
		t.Fatalf("enroll with key agreement: %v", err)
	}
	if cred.Name != "ka-1" || cred.Code != http.StatusCreated || len(cred.Key) != device.KeySize {
		t.Fatalf("enroll: got %s, code %d, %d-byte key; want ka-1, 201, 32", cred, cred.Code, len(cred.Key))
	}
	first := bytes.Clone(cred.Key)
	s := newSigner(t, "ka-1", hex.EncodeToString(first))
	if r := s.do(t, tap.ln.Addr().String(), "POST", "/api/v1/nodes", "application/json", firmwareNode(t, "ka-1", "127.0.0.1")); r.code != 201 {
		t.Fatalf("signed POST node with the derived key: got %d %s, want 201", r.code, r.body)
	}

	next, err := client.Rotate(ctx, device.RotateRequest{Name: "ka-1", Key: first, GatewayKey: gatewayKey})
	if err != nil {
		t.Fatalf("rotate with key agreement: %v", err)
	}
	if bytes.Equal(next.Key, first) || next.Code != http.StatusOK {
		t.Fatalf("rotate: got code %d, the same key %v; want 200 and a new key", next.Code, bytes.Equal(next.Key, first))
	}
	ns := newSigner(t, "ka-1", hex.EncodeToString(next.Key))
	if r := ns.do(t, tap.ln.Addr().String(), "GET", "/api/v1/nodes/ka-1", "", ""); r.code != 200 {
		t.Fatalf("signed GET node with the rotated key: got %d %s, want 200", r.code, r.body)
	}
	if !gatewaytest.WaitFor(context.Background(), 5*time.Second, func() bool {
		return s.do(t, gw.Addr, "GET", "/api/v1/nodes/ka-1", "", "").code == 401
	}) {
		t.Fatal("the first key still accepted 5s after the rotated one was used")
	}

	traffic := tap.captured()
	for _, want := range []string{"POST /picogate/v1/enroll", `"ephemeralKey":"`, `"keyConfirm":"`, "POST /picogate/v1/rotate", "PGW1-HMAC-SHA256"} {
		if !bytes.Contains(traffic, []byte(want)) {
			t.Fatalf("the recording lacks %q: the relay did not see the exchange (%d bytes)", want, len(traffic))
		}
	}
	for name, k := range map[string][]byte{"enrolled key": first, "rotated key": next.Key} {
		for _, form := range keyForms(k) {
			if bytes.Contains(traffic, form) {
				t.Errorf("the %s is in the traffic (%d bytes recorded)", name, len(traffic))
			}
		}
	}
	if k := regexp.MustCompile(`"key":"[0-9a-fA-F]{64}"`).Find(traffic); k != nil {
		t.Error(`an answer carries a "key": hmac answers must carry keyConfirm only`)
	}
	t.Logf("%d bytes of enrollment, signed requests and rotation recorded; neither key in them", len(traffic))
}

// TestKeyAgreementTamperedInFlight: someone in the middle who replaces the board's ephemeral key with
// their own (and holds the token) gets a key from the gateway, as the protocol documents it cannot
// prevent, but the board is not fooled: the keyConfirm it receives is for the attacker's key, so its
// check fails and it discards what it derived.
func TestKeyAgreementTamperedInFlight(t *testing.T) {
	gw := startEnrollmentGateway(t)
	token, gatewayKey := keyAgreeToken(t, "--ttl", "10m", "--uses", "1", "--prefix", "kam-")
	attacker, err := device.NewKeyExchange(gatewayKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	eph := regexp.MustCompile(`"ephemeralKey":"[0-9a-f]{64}"`)
	mitm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		body = eph.ReplaceAll(body, []byte(`"ephemeralKey":"`+hex.EncodeToString(attacker.PublicKey())+`"`))
		resp, err := http.Post("http://"+gw.Addr+r.URL.Path, r.Header.Get("Content-Type"), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	defer mitm.Close()
	client, err := device.NewClient(device.ClientConfig{Gateway: mitm.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cred, err := client.Enroll(ctx, device.EnrollRequest{Token: token, Name: "kam-1", HardwareID: "E6614C311B5C6A2F", GatewayKey: gatewayKey})
	if !errors.Is(err, device.ErrKeyNotConfirmed) || cred.Key != nil {
		t.Fatalf("enroll through a tampering relay: got %s, %v; want ErrKeyNotConfirmed and no key", cred, err)
	}
	if !strings.Contains(err.Error(), "could not prove the pinned gateway key") {
		t.Errorf("got %q, want it to say the gateway could not prove the pinned key", err)
	}
	// The attacker's key is the one the gateway holds: the documented limit of a stolen token.
	key, _, err := attacker.Enroll("kam-1", "E6614C311B5C6A2F", token)
	if err != nil {
		t.Fatal(err)
	}
	s := newSigner(t, "kam-1", hex.EncodeToString(key))
	if r := s.do(t, gw.Addr, "GET", "/api/v1/nodes/kam-1", "", ""); r.code == 401 {
		t.Fatalf("the attacker's key: got 401, want it accepted (the gateway agreed it): %s", r.body)
	}
}
