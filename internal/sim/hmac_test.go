package sim

import (
	"strings"
	"testing"
	"time"

	"github.com/picogate/picogate/device"
)

func TestParseCredentialsHMAC(t *testing.T) {
	key := strings.Repeat("ab", 32)
	creds, err := ParseCredentials([]byte(`[{"name":"pico-1","auth":"hmac","key":"` + key + `"}]`))
	if err != nil || len(creds) != 1 || creds[0].Key != key {
		t.Fatalf("got %+v, %v; want one hmac credential", creds, err)
	}
	if creds[0].String() != "pico-1 (hmac)" {
		t.Errorf("String: got %q, want no key shown", creds[0].String())
	}
	for _, bad := range []string{``, `"abcd"`, `"` + strings.Repeat("zz", 32) + `"`} {
		body := `{"name":"pico-1","auth":"hmac"}`
		if bad != "" {
			body = `{"name":"pico-1","auth":"hmac","key":` + bad + `}`
		}
		if _, err := ParseCredentials([]byte(body)); err == nil || !strings.Contains(err.Error(), "64 hex digits") {
			t.Errorf("key %s: got %v, want the key refused", bad, err)
		}
	}
}

// TestSignedFirmwareRequestFits: a firmware that signs still fits its 2048-byte request buffer with
// its largest request, the boot POST of its Node.
func TestSignedFirmwareRequestFits(t *testing.T) {
	f, err := newFirmware(Config{Gateway: "http://192.168.1.10:6080"}, Credential{Name: "pico-1", Auth: "hmac", Key: strings.Repeat("ab", 32)})
	if err != nil {
		t.Fatal(err)
	}
	f.date, f.dateAt = time.Unix(1764579600, 0), time.Now()
	body := f.nodeBody()
	auth, err := f.signer.Authorization("POST", "/api/v1/nodes", "", "application/json", body)
	if err != nil {
		t.Fatal(err)
	}
	req := appendFirmwareRequestAuth(nil, "POST", "/api/v1/nodes", f.host, auth, "application/json", body)
	t.Logf("signed POST of the node: %d bytes (header %d)", len(req), len("Authorization: ")+len(auth)+2)
	if len(req) > firmwareRequestBuffer {
		t.Errorf("signed POST of the node: %d bytes, over the %d-byte buffer", len(req), firmwareRequestBuffer)
	}
	if !strings.Contains(string(req), "\r\nAuthorization: PGW1-HMAC-SHA256 Credential=pico-1, Timestamp=1764579600, Nonce=") {
		t.Errorf("got %q, want the signature header on the board's clock", req)
	}
	var _ device.Signer = f.signer
}
