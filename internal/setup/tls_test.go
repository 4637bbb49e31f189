package setup

import (
	"crypto/x509"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/devicetls"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := firstCert(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIssueTLSCreatesThenRotates(t *testing.T) {
	dir, caDir := t.TempDir(), t.TempDir()
	cfg := TLSConfig{Dir: dir, CADir: caDir, SANs: []string{"picogate.lan", "192.168.1.10"}}
	first, err := IssueTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !first.CACreated || !first.TicketKeyCreated {
		t.Errorf("first run: got CA created %v, ticket key created %v; want both", first.CACreated, first.TicketKeyCreated)
	}
	for _, p := range []string{first.CACert, first.CAKey, first.Cert, first.Key, first.TicketKey} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: got mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
	if filepath.Dir(first.CAKey) != caDir || filepath.Dir(first.Key) != dir {
		t.Errorf("got CA key in %s and leaf key in %s, want %s and %s", filepath.Dir(first.CAKey), filepath.Dir(first.Key), caDir, dir)
	}
	ca, leaf := readCert(t, first.CACert), readCert(t, first.Cert)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, name := range []string{"picogate.lan", "192.168.1.10"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("leaf for %s: %v", name, err)
		}
	}
	// The gateway's TLS port loads what setup wrote.
	if _, err := devicetls.New(devicetls.Config{CertFile: first.Cert, KeyFile: first.Key, TicketKeyFile: first.TicketKey, Allowed: func(netip.Addr) bool { return true }}); err != nil {
		t.Errorf("the TLS port refuses what setup wrote: %v", err)
	}
	seed, _ := os.ReadFile(first.TicketKey)

	second, err := IssueTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if second.CACreated || second.TicketKeyCreated {
		t.Errorf("second run: got CA created %v, ticket key created %v; want both kept", second.CACreated, second.TicketKeyCreated)
	}
	if second.CAFingerprint != first.CAFingerprint {
		t.Errorf("second run: got CA %s, want the first run's %s (boards pin it)", second.CAFingerprint, first.CAFingerprint)
	}
	if next := readCert(t, second.Cert); next.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("second run: got the same leaf, want a new one")
	} else if _, err := next.Verify(x509.VerifyOptions{Roots: pool, DNSName: "picogate.lan"}); err != nil {
		t.Errorf("rotated leaf against the pinned CA: %v", err)
	}
	if again, _ := os.ReadFile(second.TicketKey); string(again) != string(seed) {
		t.Error("second run: the ticket key seed changed, want it kept (replacing it ends every board's session)")
	}
}

func TestIssueTLSRefusals(t *testing.T) {
	halfCA := t.TempDir()
	if err := os.WriteFile(filepath.Join(halfCA, CACertFile), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  TLSConfig
		want string
	}{
		{"no SANs", TLSConfig{Dir: t.TempDir()}, "--tls-san"},
		{"bad SAN", TLSConfig{Dir: t.TempDir(), SANs: []string{"not a name"}}, "neither a DNS name"},
		{"half a CA", TLSConfig{Dir: t.TempDir(), CADir: halfCA, SANs: []string{"gw"}}, "without the other"},
		{"negative validity", TLSConfig{Dir: t.TempDir(), SANs: []string{"gw"}, Validity: -time.Hour}, "--tls-validity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := IssueTLS(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestFormatFingerprint(t *testing.T) {
	if got := FormatFingerprint("0a1bff"); got != "0A:1B:FF" {
		t.Errorf("got %s, want 0A:1B:FF", got)
	}
}
