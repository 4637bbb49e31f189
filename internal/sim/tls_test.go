package sim

import (
	"crypto/tls"
	"strings"
	"testing"
)

func TestTLSGatewayNeedsPinnedCA(t *testing.T) {
	creds := []Credential{{Name: "pico-1", Auth: "token", Token: "pgt_x"}}
	for _, tc := range []struct {
		name    string
		gateway string
		tls     *tls.Config
		want    string
	}{
		{"https with a CA", "https://127.0.0.1:6084", &tls.Config{}, ""},
		{"https without a CA", "https://127.0.0.1:6084", nil, "picosim --ca"},
		{"a CA for http", "http://127.0.0.1:6080", &tls.Config{}, "not https://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, mode := range []string{ModeAgent, ModeFirmware} {
				_, err := New(Config{Gateway: tc.gateway, TLS: tc.tls, Credentials: creds, Mode: mode})
				if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
					t.Errorf("%s: got %v, want an error containing %q", mode, err, tc.want)
				}
			}
		})
	}
}

func TestDeviceTLSKeepsSessionsApart(t *testing.T) {
	fleet := &tls.Config{ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	a, b := deviceTLS(fleet, "gw.lan"), deviceTLS(fleet, "gw.lan")
	if a.ClientSessionCache == b.ClientSessionCache || a.ClientSessionCache == fleet.ClientSessionCache {
		t.Error("got a session cache shared between boards, want one per board")
	}
	if a.ServerName != "gw.lan" {
		t.Errorf("got server name %q, want the gateway's host", a.ServerName)
	}
	if deviceTLS(nil, "gw.lan") != nil {
		t.Error("got a TLS config for a plain gateway")
	}
}
