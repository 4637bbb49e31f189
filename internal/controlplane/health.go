package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// newHealthClient speaks TLS to the three servers, which all present the CA-signed loopback
// certificate, as the admin: kube-apiserver's /readyz needs no credentials, but the admin gets
// the same answer and also sees why it is not ready.
func newHealthClient(p *pki) (*http.Client, error) {
	caPEM, err := os.ReadFile(p.caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no certificate in CA file")
	}
	admin, err := tls.LoadX509KeyPair(p.adminCert, p.adminKey)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &http.Transport{
		Proxy:             nil, // loopback only, whatever the environment says
		TLSClientConfig:   &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{admin}, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true, // a restarted API server must not be judged by an old connection
	}}, nil
}

// getOK fetches url and wants 200 with a body of "ok".
func getOK(ctx context.Context, hc *http.Client, url string) error {
	body, err := get(ctx, hc, url)
	if err != nil {
		return err
	}
	if strings.TrimSpace(body) != "ok" {
		return fmt.Errorf("GET %s: got %q, want \"ok\"", url, firstLine(body))
	}
	return nil
}

// etcdHealthy asks etcd's /health, which says {"health":"true"} once it serves.
func etcdHealthy(ctx context.Context, hc *http.Client, url string) error {
	body, err := get(ctx, hc, url)
	if err != nil {
		return err
	}
	var h struct {
		Health string `json:"health"`
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if h.Health != "true" {
		return fmt.Errorf("GET %s: got health %q, want \"true\"", url, h.Health)
	}
	return nil
}

func get(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, failedChecks(string(body)))
	}
	return string(body), nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// failedChecks keeps the "[-]name failed" lines of a /readyz or /healthz answer, which say what
// is still missing; any other body is cut to its first line.
func failedChecks(body string) string {
	var failed []string
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, "[-]") {
			failed = append(failed, strings.TrimSpace(line))
		}
	}
	if len(failed) == 0 {
		return firstLine(body)
	}
	return strings.Join(failed, "; ")
}
