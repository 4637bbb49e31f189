package devicetls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

func parseCert(t testing.TB, p []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(p)
	if b == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIssueLeafChainsToCA(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("test CA", 0, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := IssueLeaf(ca, []string{"picogate.lan", "192.168.1.10", "::1"}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	caCert, cert := parseCert(t, ca.Cert), parseCert(t, leaf.Cert)
	if !caCert.IsCA || !caCert.MaxPathLenZero {
		t.Errorf("CA: got IsCA %v MaxPathLenZero %v, want both (a one-link chain)", caCert.IsCA, caCert.MaxPathLenZero)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	for _, name := range []string{"picogate.lan", "192.168.1.10", "::1"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, CurrentTime: now}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.lan", CurrentTime: now}); err == nil {
		t.Error("verify for other.lan: got success, want a name mismatch")
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("leaf key: got %T, want ECDSA P-256", cert.PublicKey)
	}
	if got := cert.NotAfter.Sub(now); got > time.Hour || got < 59*time.Minute {
		t.Errorf("leaf validity: got %s, want 1h", got)
	}
	if len(cert.Raw) > 600 {
		t.Errorf("leaf: got %d bytes DER, want at most 600 (a board receives it on every full handshake)", len(cert.Raw))
	}
	b, _ := pem.Decode(leaf.Key)
	if b == nil || b.Type != "EC PRIVATE KEY" {
		t.Errorf("leaf key PEM: got %v, want an EC PRIVATE KEY block", b)
	}
}

func TestIssueLeafRefusals(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("test CA", 0, now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other CA", 0, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := IssueLeaf(ca, []string{"a.lan"}, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ca   PEM
		sans []string
		want string
	}{
		{"no names", ca, nil, "no names"},
		{"bad name", ca, []string{"a b"}, "neither a DNS name"},
		{"empty name", ca, []string{""}, "empty name"},
		{"mismatched key", PEM{Cert: ca.Cert, Key: other.Key}, []string{"a.lan"}, "does not match"},
		{"leaf as CA", leaf, []string{"a.lan"}, "not a CA"},
		{"no PEM", PEM{}, []string{"a.lan"}, "no PEM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := IssueLeaf(tc.ca, tc.sans, 0, now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseSANs(t *testing.T) {
	for _, tc := range []struct {
		in      string
		dns, ip int
		ok      bool
	}{
		{"picogate", 1, 0, true},
		{"GW.Example.LAN", 1, 0, true},
		{"*.lan", 1, 0, true},
		{"10.0.0.1", 0, 1, true},
		{"fe80::1", 0, 1, true},
		{"-bad.lan", 0, 0, false},
		{"a..b", 0, 0, false},
		{"under_score", 0, 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			dns, ips, err := ParseSANs([]string{tc.in})
			if (err == nil) != tc.ok || len(dns) != tc.dns || len(ips) != tc.ip {
				t.Errorf("got dns %v ips %v err %v, want %d DNS %d IP ok %v", dns, ips, err, tc.dns, tc.ip, tc.ok)
			}
		})
	}
	if dns, _, _ := ParseSANs([]string{"GW.LAN"}); dns[0] != "gw.lan" {
		t.Errorf("got %q, want the name lower-cased", dns[0])
	}
}
