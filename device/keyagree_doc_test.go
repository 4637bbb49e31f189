package device

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const protocolDoc = "../docs/device-protocol.md"

// keyAgreeDocHeading starts the section of docs/device-protocol.md that holds the vectors and the C
// sketch this file checks.
const keyAgreeDocHeading = "## Key agreement (hmac enrollment and rotation)"

// docKeyAgreeVectors is the test vector block docs/device-protocol.md shows, built from
// testdata/keyagree-vectors.json.
func docKeyAgreeVectors(v keyAgreeVectors) string {
	var b strings.Builder
	row := func(label, value string) { fmt.Fprintf(&b, "%-22s%s\n", label, value) }
	wrapped := func(label, hexText string) {
		for i := 0; i < len(hexText); i += 64 {
			row(label, hexText[i:min(i+64, len(hexText))])
			label = ""
		}
	}
	b.WriteString("```text\n")
	row("s  gateway private", v.Enroll.GatewayPrivate)
	row("S  gateway key", v.Enroll.GatewayKey)
	b.WriteString("\nenrollment\n")
	row("e", v.Enroll.EphemeralPrivate)
	row("E  ephemeralKey", v.Enroll.EphemeralKey)
	row("name", v.Enroll.Name)
	row("hardwareId", v.Enroll.HardwareID)
	row("token", v.Enroll.Token)
	row("X25519(e, S)", v.Enroll.SharedSecret)
	wrapped(fmt.Sprintf("th input (%d bytes)", len(v.Enroll.TranscriptInput)/2), v.Enroll.TranscriptInput)
	row("th", v.Enroll.Transcript)
	row("key", v.Enroll.Key)
	row("keyConfirm", v.Enroll.KeyConfirm)
	b.WriteString("\nrotation of that key\n")
	row("e", v.Rotate.EphemeralPrivate)
	row("E  ephemeralKey", v.Rotate.EphemeralKey)
	row("name", v.Rotate.Name)
	row("current key", v.Rotate.CurrentKey)
	row("X25519(e, S)", v.Rotate.SharedSecret)
	wrapped(fmt.Sprintf("th input (%d bytes)", len(v.Rotate.TranscriptInput)/2), v.Rotate.TranscriptInput)
	row("th", v.Rotate.Transcript)
	row("key", v.Rotate.Key)
	row("keyConfirm", v.Rotate.KeyConfirm)
	b.WriteString("```\n")
	return b.String()
}

// keyAgreeDocSection returns the key agreement section of docs/device-protocol.md.
func keyAgreeDocSection(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(doc), "\n"+keyAgreeDocHeading+"\n")
	if !ok {
		t.Fatalf("%s: no section %q", protocolDoc, keyAgreeDocHeading)
	}
	if i := strings.Index(sec, "\n## "); i >= 0 {
		sec = sec[:i]
	}
	return sec
}

// TestKeyAgreeDocVectors keeps the vectors in docs/device-protocol.md equal to testdata.
func TestKeyAgreeDocVectors(t *testing.T) {
	if want := docKeyAgreeVectors(loadKeyAgreeVectors(t)); !strings.Contains(keyAgreeDocSection(t), want) {
		t.Errorf("%s: the key agreement vectors are not %s's; the block should read:\n%s", protocolDoc, keyAgreeVectorsFile, want)
	}
}

// TestKeyAgreeCSketch compiles the section's mbedtls C sketch on the host and checks that it
// reproduces the vectors (and RFC 7748's, and refuses a low-order gateway key). It needs a C compiler
// and mbedtls 2.28 or later (Debian/Ubuntu: apt-get install libmbedtls-dev); without them it skips.
func TestKeyAgreeCSketch(t *testing.T) {
	sec := keyAgreeDocSection(t)
	_, code, ok := strings.Cut(sec, "\n```c\n")
	if !ok {
		t.Fatalf("%s: no C sketch in the key agreement section", protocolDoc)
	}
	code, _, _ = strings.Cut(code, "\n```\n")
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler (cc) on this machine: the mbedtls sketch is not checked")
	}
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe.c")
	mustWrite(t, probe, "#include \"mbedtls/hkdf.h\"\n#include \"mbedtls/ecp.h\"\nint main(void) { return mbedtls_ecp_curve_info_from_grp_id(MBEDTLS_ECP_DP_CURVE25519) == 0; }\n")
	if out, err := exec.Command(cc, "-o", filepath.Join(dir, "probe"), probe, "-lmbedcrypto").CombinedOutput(); err != nil {
		t.Skipf("mbedtls with HKDF and Curve25519 not found (apt-get install libmbedtls-dev): the C sketch is not checked\n%s", out)
	}
	v := loadKeyAgreeVectors(t)
	mustWrite(t, filepath.Join(dir, "pgw_keyagree.c"), code+"\n")
	mustWrite(t, filepath.Join(dir, "main.c"), fmt.Sprintf(cSketchHarness,
		v.Enroll.GatewayPrivate, v.Enroll.EphemeralPrivate, v.Rotate.EphemeralPrivate,
		v.Enroll.Name, v.Enroll.HardwareID, v.Enroll.Token,
		v.X25519.AlicePrivate, v.X25519.BobPublic))
	bin := filepath.Join(dir, "sketch")
	if out, err := exec.Command(cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", bin, filepath.Join(dir, "main.c"), "-lmbedcrypto").CombinedOutput(); err != nil {
		t.Fatalf("compiling the C sketch of %s: %v\n%s", protocolDoc, err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"S " + v.Enroll.GatewayKey,
		"E " + v.Enroll.EphemeralKey, "key " + v.Enroll.Key, "keyConfirm " + v.Enroll.KeyConfirm, "confirmed 1 tampered 0",
		"E " + v.Rotate.EphemeralKey, "key " + v.Rotate.Key, "keyConfirm " + v.Rotate.KeyConfirm,
		"rfc7748 " + v.X25519.Shared,
		"low-order gateway key refused",
	}, "\n") + "\n"
	if got := string(out); got != want || err != nil {
		t.Fatalf("the C sketch of %s (exit %v):\ngot\n%swant\n%s", protocolDoc, err, got, want)
	}
}

// cSketchHarness runs the doc's C sketch on the vectors' inputs (filled in by Sprintf).
const cSketchHarness = `#include <stdio.h>
#include <stdlib.h>
#include "pgw_keyagree.c"

static int test_rng(void *ctx, unsigned char *out, size_t n) { /* blinding only: any bytes give the same result */
    (void)ctx;
    for (size_t i = 0; i < n; i++) out[i] = (unsigned char)rand();
    return 0;
}
static void unhex(const char *h, uint8_t out[32]) {
    for (int i = 0; i < 32; i++) { unsigned v; sscanf(h + 2 * i, "%%2x", &v); out[i] = (uint8_t)v; }
}
static void tohex(const uint8_t in[32], char out[65]) {
    for (int i = 0; i < 32; i++) sprintf(out + 2 * i, "%%02x", in[i]);
}
static void show(const char *label, const uint8_t b[32]) { char h[65]; tohex(b, h); printf("%%s %%s\n", label, h); }

int main(void) {
    uint8_t s[32], S[32], e[32], e2[32], E[32], key[32], confirm[32], next[32], out[32], pub[32];
    char h[65];
    unhex("%s", s); unhex("%s", e); unhex("%s", e2);
    if (pgw_x25519(s, NULL, S, test_rng, NULL) != 0) return 1;
    show("S", S);
    if (pgw_enroll(e, S, "%s", "%s", "%s", E, key, confirm, test_rng, NULL) != 0) return 2;
    show("E", E); show("key", key); show("keyConfirm", confirm);
    tohex(confirm, h);
    printf("confirmed %%d", pgw_confirm_ok(confirm, h));
    h[63] = h[63] == '0' ? '1' : '0';
    printf(" tampered %%d\n", pgw_confirm_ok(confirm, h));
    if (pgw_rotate(e2, S, "pico-7", key, E, next, confirm, test_rng, NULL) != 0) return 3;
    show("E", E); show("key", next); show("keyConfirm", confirm);
    unhex("%s", s); unhex("%s", pub);
    if (pgw_x25519(s, pub, out, test_rng, NULL) != 0) return 4;
    show("rfc7748", out);
    unhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", pub); /* order 8 */
    if (pgw_enroll(e, pub, "pico-7", "HW1", "pge_a.b", E, key, confirm, test_rng, NULL) == 0) return 5;
    printf("low-order gateway key refused\n");
    return 0;
}
`

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
