package hmacauth

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// docExample is the worked example docs/device-protocol.md shows, built from a test vector.
func docExample(v Vector) string {
	unix, _ := strconv.ParseInt(v.Timestamp, 10, 64)
	ts := time.Unix(unix, 0).UTC()
	var b strings.Builder
	b.WriteString("```text\n")
	b.WriteString("key (hex)     " + v.Key + "\n")
	b.WriteString("request       " + v.Method + " " + v.Path + "\n")
	b.WriteString("Content-Type  " + v.ContentType + "\n")
	b.WriteString("body          " + v.Body + "\n")
	b.WriteString("timestamp     " + v.Timestamp + " (" + ts.Format(time.RFC3339) + ")\n")
	b.WriteString("nonce         " + v.Nonce + "\n")
	b.WriteString("\nstring to sign, 7 lines joined by \\n (line 3, the query, is empty; no \\n after line 7):\n")
	b.WriteString(v.Canonical + "\n")
	b.WriteString("\nHMAC-SHA256   " + v.Signature + "\n")
	b.WriteString("\nAuthorization: " + v.Authorization + "\n")
	b.WriteString("```\n")
	return b.String()
}

// TestDocExample keeps the worked example in docs/device-protocol.md equal to the first test vector
// (computed with openssl; TestVectors checks this package against it, device/ checks its signer).
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/device-protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := docExample(loadVectors(t)[0]); !strings.Contains(string(doc), want) {
		t.Errorf("docs/device-protocol.md: the worked example is not testdata/vectors.json's first vector; it should read:\n%s", want)
	}
}
