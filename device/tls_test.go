package device

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestTLSConfigChecks(t *testing.T) {
	pinned, err := PinnedTLS(selfSigned(t), "example.com")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"https with a pinned CA", Config{Name: "pico-1", Gateway: "https://gw:6084", TLS: pinned}, ""},
		{"https with the system's roots", Config{Name: "pico-1", Gateway: "https://gw:6084"}, ""},
		{"TLS for an http gateway", Config{Name: "pico-1", Gateway: "http://gw:6080", TLS: pinned}, "not https://"},
		{"TLS with a custom client", Config{Name: "pico-1", Gateway: "https://gw:6084", TLS: pinned, HTTPClient: &http.Client{}}, "only used without HTTPClient"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.withDefaults()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
			_, cerr := NewClient(ClientConfig{Gateway: tc.cfg.Gateway, TLS: tc.cfg.TLS, HTTPClient: tc.cfg.HTTPClient})
			if tc.want == "" && cerr != nil || tc.want != "" && (cerr == nil || !strings.Contains(cerr.Error(), tc.want)) {
				t.Errorf("client: got %v, want an error containing %q", cerr, tc.want)
			}
		})
	}
	if _, err := PinnedTLS([]byte("not a certificate"), ""); err == nil {
		t.Error("PinnedTLS of garbage: got no error")
	}
}

// TestPinnedTLSTrustsOnlyItsCA: a client pinned to the server's CA gets the server's answer; one pinned
// to another CA never sends its request.
func TestPinnedTLSTrustsOnlyItsCA(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403}`))
	}))
	defer srv.Close()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	gwKey := k.PublicKey().Bytes()
	for _, tc := range []struct {
		name   string
		ca     []byte
		want   string
		served bool
	}{
		{"pinned", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), "403", true},
		{"another CA", selfSigned(t), "certificate", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits.Store(0)
			cfg, err := PinnedTLS(tc.ca, "example.com")
			if err != nil {
				t.Fatal(err)
			}
			c, err := NewClient(ClientConfig{Gateway: srv.URL, TLS: cfg})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Enroll(context.Background(), EnrollRequest{Token: "pge_x.y", Name: "pico-1", HardwareID: "E661", GatewayKey: gwKey})
			if err == nil || !strings.Contains(err.Error(), tc.want) || (hits.Load() > 0) != tc.served {
				t.Errorf("got %v with %d requests served, want an error containing %q and served %v", err, hits.Load(), tc.want, tc.served)
			}
		})
	}
}

// selfSigned is a CA of its own, trusted by nothing.
func selfSigned(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
