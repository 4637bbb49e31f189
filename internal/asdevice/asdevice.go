// Package asdevice makes the gateway's own requests to the Kubernetes API server on behalf of a device:
// heartbeat translation's Lease renewals and status writes, and the read cache's reads. Each request is
// made as the device — Impersonate-User system:node:NAME with the groups system:nodes and
// picogate:devices, exactly as a forwarded request — so the Node authorizer and NodeRestriction confine
// it as they confine the device itself: the gateway never reads or writes with its own rights for a
// device.
//
// One Client carries every device's requests over the gateway's upstream transport (the one forwarded
// requests use), with the impersonation set per request: 5,000 devices cost one client and one
// connection pool, not one client each.
package asdevice

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Identity is whom a request is made as: the impersonation header values of a device (registry.Device's
// User and Groups, built once per device, so a request only copies slice headers).
type Identity struct {
	User   []string // exactly one value: system:node:NAME
	Groups []string
}

// Request is one request to the API server.
type Request struct {
	Method string
	// Path is the absolute API path, e.g. /api/v1/nodes/pico-1/status, without a query.
	Path        string
	ContentType string // of Body; empty without a body
	Body        []byte
	// UserAgent is sent upstream, so the API server's audit log names the device's software as it does
	// for a forwarded request. Empty: the transport's default.
	UserAgent string
}

// Response is the API server's answer. An HTTP error status is a Response, not an error: the caller
// relays it to the device.
type Response struct {
	Code int
	Body []byte
	// RetryAfter is the API server's Retry-After header, if any (a 429 or 503).
	RetryAfter string
}

// Doer makes one request as a device. An error means no answer came (network, timeout, context).
type Doer interface {
	Do(ctx context.Context, as Identity, req Request) (Response, error)
}

// DoerFunc adapts a function to Doer (tests use it as a fake API server).
type DoerFunc func(ctx context.Context, as Identity, req Request) (Response, error)

// Do calls f.
func (f DoerFunc) Do(ctx context.Context, as Identity, req Request) (Response, error) {
	return f(ctx, as, req)
}

// Config configures a Client.
type Config struct {
	// Base is the API server's base URL; a path prefix in it is kept. Required.
	Base *url.URL
	// Transport carries requests with the gateway's own credential (upstream.Upstream.Transport).
	// Required.
	Transport http.RoundTripper
	// MaxResponseBytes caps an answer read into memory. Default 1 MiB: a device's Node, Lease or
	// ConfigMap is a few KB.
	MaxResponseBytes int64
}

// Client is a Doer over the gateway's upstream transport.
type Client struct {
	cfg  Config
	base string
}

// New validates cfg, reporting every problem at once, and builds a Client.
func New(cfg Config) (*Client, error) {
	var errs []error
	if cfg.Base == nil || cfg.Base.Host == "" {
		errs = append(errs, errors.New("the API server's base URL is required"))
	}
	if cfg.Transport == nil {
		errs = append(errs, errors.New("an upstream transport is required"))
	}
	if cfg.MaxResponseBytes < 0 {
		errs = append(errs, fmt.Errorf("max response bytes %d is negative", cfg.MaxResponseBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("invalid asdevice configuration: %w", err)
	}
	if cfg.MaxResponseBytes == 0 {
		cfg.MaxResponseBytes = 1 << 20
	}
	return &Client{cfg: cfg, base: strings.TrimSuffix(cfg.Base.String(), "/")}, nil
}

// Do sends req as the identity and reads the whole answer. It never retries: the device's request is
// waiting, bounded by ctx.
func (c *Client) Do(ctx context.Context, as Identity, req Request) (Response, error) {
	if len(as.User) != 1 {
		return Response{}, errors.New("a device identity has exactly one user")
	}
	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, c.base+req.Path, body)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: %w", req.Method, req.Path, err)
	}
	h := hr.Header
	h["Impersonate-User"] = as.User
	h["Impersonate-Group"] = as.Groups
	h.Set("Accept", "application/json")
	if req.UserAgent != "" {
		h.Set("User-Agent", req.UserAgent)
	}
	if req.Body != nil {
		h.Set("Content-Type", req.ContentType)
	}
	res, err := c.cfg.Transport.RoundTrip(hr)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: %w", req.Method, req.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, c.cfg.MaxResponseBytes+1))
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: reading the answer: %w", req.Method, req.Path, err)
	}
	if int64(len(b)) > c.cfg.MaxResponseBytes {
		return Response{}, fmt.Errorf("%s %s: answer over %d bytes", req.Method, req.Path, c.cfg.MaxResponseBytes)
	}
	return Response{Code: res.StatusCode, Body: b, RetryAfter: res.Header.Get("Retry-After")}, nil
}
