package enroll

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/picogate/picogate/device"
)

// TestGatewayAgreesWithBoard: the key and confirmation the gateway derives from a board's ephemeral
// key equal the board's own (device.KeyExchange), for enrollment and rotation.
func TestGatewayAgreesWithBoard(t *testing.T) {
	gk, err := newGatewayKey(bytes.Repeat([]byte{7}, device.GatewayKeySize))
	if err != nil {
		t.Fatal(err)
	}
	kx, err := device.NewKeyExchange(gk.Public(), nil)
	if err != nil {
		t.Fatal(err)
	}
	dh, err := gk.shared(kx.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	const tok = "pge_abc123.aaaaaaaaaaaaaaaaaaaaaaaaaa"
	boardKey, boardConfirm, err := kx.Enroll("pico-1", "E661", tok)
	if err != nil {
		t.Fatal(err)
	}
	key, confirm, err := device.DeriveKey(dh, device.EnrollTranscript(gk.Public(), kx.PublicKey(), "pico-1", "E661", tok))
	if err != nil || !bytes.Equal(key, boardKey) || !bytes.Equal(confirm, boardConfirm) {
		t.Errorf("enrollment: gateway and board derived different keys (%v)", err)
	}
	current := bytes.Repeat([]byte{9}, 32)
	boardKey, boardConfirm, _ = kx.Rotate("pico-1", current)
	key, confirm, err = device.DeriveKey(dh, device.RotateTranscript(gk.Public(), kx.PublicKey(), "pico-1", current))
	if err != nil || !bytes.Equal(key, boardKey) || !bytes.Equal(confirm, boardConfirm) {
		t.Errorf("rotation: gateway and board derived different keys (%v)", err)
	}
}

// TestGatewayKeyRefusesBadEphemeral: a low-order point would make the key a function of public values.
func TestGatewayKeyRefusesBadEphemeral(t *testing.T) {
	gk, _ := newGatewayKey(bytes.Repeat([]byte{7}, device.GatewayKeySize))
	for _, e := range [][]byte{make([]byte, 32), {1}} {
		if _, err := gk.shared(e); err == nil {
			t.Errorf("ephemeral key %x: got no error, want a refusal", e)
		}
	}
}

// TestGatewayKeyNeverFormatsPrivate: %v, %s and slog show the public key, never the private one.
func TestGatewayKeyNeverFormatsPrivate(t *testing.T) {
	priv := bytes.Repeat([]byte{0x5a}, device.GatewayKeySize)
	gk, _ := newGatewayKey(priv)
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "key", gk)
	out := fmt.Sprintf("%v %s %+v", gk, gk, gk) + buf.String()
	if strings.Contains(out, hex.EncodeToString(priv)) {
		t.Errorf("the private key leaked into %q", out)
	}
	if !strings.Contains(out, gk.PublicHex()) {
		t.Errorf("got %q, want the public key in it", out)
	}
}

// TestEnsureGatewayKeyOnce: replicas (and the CLI) creating the key at the same moment all end up with
// one key, the one in the Secret.
func TestEnsureGatewayKeyOnce(t *testing.T) {
	cs := client(t)
	const ns = "picogate-system"
	var wg sync.WaitGroup
	keys := make([]*GatewayKey, 8)
	errs := make([]error, 8)
	for i := range keys {
		wg.Go(func() { keys[i], errs[i] = EnsureGatewayKey(context.Background(), cs, ns) })
	}
	wg.Wait()
	for i, k := range keys {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if k.PublicHex() != keys[0].PublicHex() {
			t.Errorf("replica %d: got key %s, want %s (one key for all)", i, k, keys[0])
		}
	}
	again, err := NewGatewayKeys(cs, ns).Get(context.Background())
	if err != nil || again.PublicHex() != keys[0].PublicHex() {
		t.Errorf("reading it again: got %v (%v), want %s", again, err, keys[0])
	}
}
