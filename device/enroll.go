package device

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ErrKeyNotConfirmed is returned by Client.Enroll and Client.Rotate when the gateway's keyConfirm does
// not match the one the board derived: the gateway could not prove it holds the private half of the
// pinned gateway key. Either the pinned key is wrong, or someone in the middle answered. The derived key
// has been discarded.
var ErrKeyNotConfirmed = errors.New("the gateway could not prove the pinned gateway key (keyConfirm does not match): wrong pinned key, or someone in the middle; the derived key was discarded")

// Default timings of a Client.
const (
	// DefaultPendingPoll is how long an enrollment waiting for approval waits before it asks again when
	// the gateway's 202 has no Retry-After.
	DefaultPendingPoll = 5 * time.Second
	// minRetryWait keeps a Retry-After of 0 from turning a poll into a tight loop.
	minRetryWait = 100 * time.Millisecond
)

// ClientConfig configures a Client. Only Gateway is required.
type ClientConfig struct {
	// Gateway is the gateway's base URL, e.g. "http://192.168.1.10:6080".
	Gateway string
	// HTTPClient sends the requests; by default one built from Dial. Its Timeout must be zero (a Client
	// sets a deadline per request).
	HTTPClient *http.Client
	// Dial opens connections for the default HTTP client; by default a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS configures the default HTTP client for an https:// Gateway: PinnedTLS trusts only the fleet's
	// CA. Nil uses the system's roots.
	TLS *tls.Config
	// Rand is where ephemeral keys come from; default crypto/rand. Each enrollment or rotation reads 32
	// bytes.
	Rand io.Reader
	// Now is the clock a rotation is signed on; default time.Now.
	Now func() time.Time
	// ServerClock sets the clock from the gateway (GET /picogate/v1/time, then every answer's Date)
	// before a rotation is signed: for boards without a real-time clock.
	ServerClock bool
	// RequestTimeout bounds each request; default 10 s.
	RequestTimeout time.Duration
	// MaxResponseBytes bounds an answer's body; default 64 KiB.
	MaxResponseBytes int
	// Version goes into the User-Agent, picogate-device/VERSION; default DefaultVersion.
	Version string
	// Logger receives the client's log; by default nothing is logged.
	Logger *slog.Logger
}

// Client makes a board's calls to the gateway's /picogate/v1/ endpoints that change its credential:
// enrollment and key rotation, both with key agreement, so an hmac device key never crosses the LAN.
// An Agent runs the device with the key a Client returns.
type Client struct {
	cfg   ClientConfig
	clock *clock
	log   *slog.Logger
}

// NewClient checks cfg, reporting every problem at once, and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	var errs []error
	if cfg.Gateway == "" {
		errs = append(errs, errors.New("gateway: required"))
	} else if u, err := url.Parse(cfg.Gateway); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("gateway %q: want an http:// or https:// base URL", cfg.Gateway))
	} else {
		cfg.Gateway = strings.TrimRight(cfg.Gateway, "/")
	}
	if cfg.HTTPClient != nil && cfg.HTTPClient.Timeout != 0 {
		errs = append(errs, errors.New("http client: Timeout must be zero (the client sets per-request deadlines)"))
	}
	if cfg.HTTPClient != nil && cfg.Dial != nil {
		errs = append(errs, errors.New("dial: only used without HTTPClient"))
	}
	if err := checkTLS(cfg.Gateway, cfg.TLS, cfg.HTTPClient != nil); err != nil {
		errs = append(errs, err)
	}
	if cfg.RequestTimeout < 0 {
		errs = append(errs, fmt.Errorf("request timeout %s: negative", cfg.RequestTimeout))
	}
	if cfg.MaxResponseBytes != 0 && cfg.MaxResponseBytes < 4096 {
		errs = append(errs, fmt.Errorf("max response bytes %d: want at least 4096", cfg.MaxResponseBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("device client config: %w", err)
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.MaxResponseBytes == 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	setDefault(&cfg.Version, DefaultVersion)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(discardHandler{})
	}
	if cfg.HTTPClient == nil {
		dial := cfg.Dial
		if dial == nil {
			dial = (&net.Dialer{Timeout: cfg.RequestTimeout}).DialContext
		}
		cfg.HTTPClient = &http.Client{Transport: &http.Transport{
			DialContext:           dial,
			TLSClientConfig:       cfg.TLS,
			MaxIdleConnsPerHost:   1,
			IdleConnTimeout:       30 * time.Second,
			ResponseHeaderTimeout: cfg.RequestTimeout,
		}}
	}
	return &Client{cfg: cfg, clock: &clock{now: cfg.Now, server: cfg.ServerClock}, log: cfg.Logger}, nil
}

// Credential is what an enrollment or a rotation gives the board: its name and its new hmac key. Store
// the key in flash before using it; the gateway never sends it, so there is no other copy to ask for.
type Credential struct {
	Name string
	Key  []byte // KeySize bytes
	// Code is the gateway's answer: 201 a new device, 200 a new key for a device already enrolled (or an
	// approved enrollment collected, or a rotation).
	Code int
}

// LogValue keeps the key out of logs.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", c.Name), slog.String("auth", "hmac"), slog.Int("code", c.Code))
}

// String keeps the key out of %v.
func (c Credential) String() string { return fmt.Sprintf("hmac credential for %s", c.Name) }

// EnrollRequest is what a board enrolls with.
type EnrollRequest struct {
	// Token is the enrollment token (pge_…). It proves the board may enroll and is bound into the key.
	Token string
	// Name is the node name the board asks for.
	Name string
	// HardwareID identifies the board (the flash's unique id, or the Wi-Fi MAC): 1 to 64 of
	// A-Z a-z 0-9 : . _ -. It is no secret.
	HardwareID string
	// GatewayKey is the gateway's X25519 public key the firmware pinned (GatewayKeySize bytes, printed by
	// `picogate token create`). ParseGatewayKey reads its hex form.
	GatewayKey []byte
}

// LogValue keeps the token out of logs.
func (r EnrollRequest) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", r.Name), slog.String("hardwareId", r.HardwareID))
}

// RotateRequest is what a board rotates its key with.
type RotateRequest struct {
	// Name is the device's node name.
	Name string
	// Key is the device's current key; it signs the request and is bound into the next one.
	Key []byte
	// GatewayKey is the pinned gateway public key, as for enrollment.
	GatewayKey []byte
}

// LogValue keeps the key out of logs.
func (r RotateRequest) LogValue() slog.Value { return slog.GroupValue(slog.String("name", r.Name)) }

// ParseGatewayKey reads a gateway public key written as 64 hex digits (white space around it ignored).
func ParseGatewayKey(s string) ([]byte, error) {
	k, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(k) != GatewayKeySize {
		return nil, fmt.Errorf("gateway key: want %d hex digits", 2*GatewayKeySize)
	}
	return k, nil
}

// Enroll exchanges an enrollment token for an hmac key that board and gateway derive, never send:
// POST /picogate/v1/enroll with "auth":"hmac" and the ephemeral public key. While the enrollment waits
// for an operator's approval (202), and on 429 and 503, it sends the same request (same ephemeral key)
// again after the gateway's Retry-After, until ctx is done. Other refusals are an *APIError; a
// keyConfirm that does not match is ErrKeyNotConfirmed.
func (c *Client) Enroll(ctx context.Context, req EnrollRequest) (Credential, error) {
	var errs []error
	if err := validName(req.Name); err != nil {
		errs = append(errs, fmt.Errorf("name: %w", err))
	}
	if !ValidHardwareID(req.HardwareID) {
		errs = append(errs, errors.New("hardware id: want 1 to 64 characters of A-Z a-z 0-9 : . _ -"))
	}
	if req.Token == "" || strings.ContainsAny(req.Token, " \t\r\n") {
		errs = append(errs, errors.New("token: required, without white space"))
	}
	if len(req.GatewayKey) != GatewayKeySize {
		errs = append(errs, fmt.Errorf("gateway key: %d bytes, want %d", len(req.GatewayKey), GatewayKeySize))
	}
	if err := errors.Join(errs...); err != nil {
		return Credential{}, fmt.Errorf("enrolling: %w", err)
	}
	kx, err := NewKeyExchange(req.GatewayKey, c.cfg.Rand)
	if err != nil {
		return Credential{}, fmt.Errorf("enrolling %q: %w", req.Name, err)
	}
	key, confirm, err := kx.Enroll(req.Name, req.HardwareID, req.Token)
	if err != nil {
		return Credential{}, fmt.Errorf("enrolling %q: %w", req.Name, err)
	}
	body := appendKey(append([]byte(nil), '{'), "token")
	body = appendStr(body, req.Token)
	body = appendStr(appendKey(append(body, ','), "name"), req.Name)
	body = appendStr(appendKey(append(body, ','), "hardwareId"), req.HardwareID)
	body = append(appendKey(append(body, ','), "auth"), `"hmac"`...)
	body = append(appendKey(append(body, ','), "ephemeralKey"), '"')
	body = append(hex.AppendEncode(body, kx.PublicKey()), '"', '}')
	cred, err := c.exchange(ctx, "/picogate/v1/enroll", body, nil, req.Name, key, confirm)
	if err != nil {
		return Credential{}, fmt.Errorf("enrolling %q: %w", req.Name, err)
	}
	return cred, nil
}

// Rotate replaces an hmac device's key by one that board and gateway derive: POST /picogate/v1/rotate,
// signed with the current key, with {"ephemeralKey": hex(E)}. The current key keeps working until the
// new one is first used. On 429 and 503 it sends the request again after Retry-After (same ephemeral
// key, so the same new key), until ctx is done.
func (c *Client) Rotate(ctx context.Context, req RotateRequest) (Credential, error) {
	var errs []error
	if err := validName(req.Name); err != nil {
		errs = append(errs, fmt.Errorf("name: %w", err))
	}
	if len(req.Key) != KeySize {
		errs = append(errs, fmt.Errorf("key: %d bytes, want %d", len(req.Key), KeySize))
	}
	if len(req.GatewayKey) != GatewayKeySize {
		errs = append(errs, fmt.Errorf("gateway key: %d bytes, want %d", len(req.GatewayKey), GatewayKeySize))
	}
	if err := errors.Join(errs...); err != nil {
		return Credential{}, fmt.Errorf("rotating: %w", err)
	}
	kx, err := NewKeyExchange(req.GatewayKey, c.cfg.Rand)
	if err != nil {
		return Credential{}, fmt.Errorf("rotating %q: %w", req.Name, err)
	}
	key, confirm, err := kx.Rotate(req.Name, req.Key)
	if err != nil {
		return Credential{}, fmt.Errorf("rotating %q: %w", req.Name, err)
	}
	body := append(appendKey(append([]byte(nil), '{'), "ephemeralKey"), '"')
	body = append(hex.AppendEncode(body, kx.PublicKey()), '"', '}')
	if c.cfg.ServerClock {
		c.syncClock(ctx)
	}
	signer := &HMACSigner{Name: req.Name, Key: req.Key, Now: c.clock.Now}
	cred, err := c.exchange(ctx, "/picogate/v1/rotate", body, signer, req.Name, key, confirm)
	if err != nil {
		return Credential{}, fmt.Errorf("rotating %q: %w", req.Name, err)
	}
	return cred, nil
}

// exchange posts body until the gateway answers 200 or 201 with a credential, waiting out 202, 429
// and 503, and checks the answer's keyConfirm against confirm. It clears key on every failure.
func (c *Client) exchange(ctx context.Context, path string, body []byte, signer Signer, name string, key, confirm []byte) (Credential, error) {
	last := 0 // the previous answer's code: a deadline that ends a poll says what it was waiting for
	for {
		code, wait, answer, err := c.post(ctx, path, body, signer)
		if err != nil {
			clear(key)
			if ctx.Err() != nil && last != 0 {
				return Credential{}, waitingError(ctx, last)
			}
			return Credential{}, err
		}
		if code == http.StatusOK || code == http.StatusCreated {
			if err := checkConfirm(answer, name, confirm); err != nil {
				clear(key)
				return Credential{}, err
			}
			return Credential{Name: name, Key: key, Code: code}, nil
		}
		c.log.Debug("gateway asked to wait", "path", path, "code", code, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			clear(key)
			return Credential{}, waitingError(ctx, code)
		case <-t.C:
		}
		last = code
	}
}

// checkConfirm checks a 200/201 answer: an hmac credential for name whose keyConfirm equals confirm.
func checkConfirm(answer jval, name string, confirm []byte) error {
	if got, ok := answer.get("name").str(); ok && got != name {
		return fmt.Errorf("the gateway answered with a credential for %q", got)
	}
	if auth, ok := answer.get("auth").str(); ok && auth != "hmac" {
		return fmt.Errorf("the gateway answered with an %q credential, want hmac", auth)
	}
	kc, ok := answer.get("keyConfirm").str()
	if !ok {
		if answer.get("key") != nil {
			return errors.New("the gateway sent a key instead of keyConfirm (a gateway without key agreement, or someone in the middle); refusing a key that crossed the LAN")
		}
		return errors.New("the gateway's answer has no keyConfirm")
	}
	got, err := hex.DecodeString(kc)
	if err != nil || len(got) != len(confirm) {
		return ErrKeyNotConfirmed
	}
	if subtle.ConstantTimeCompare(got, confirm) != 1 {
		return ErrKeyNotConfirmed
	}
	return nil
}

// post sends one request and returns either a 200/201 answer's parsed body, or the wait before the
// next try for 202, 429 and 503. Anything else is an error (an *APIError for a refusal).
func (c *Client) post(ctx context.Context, path string, body []byte, signer Signer) (code int, wait time.Duration, answer jval, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.Gateway+path, bytes.NewReader(body))
	if err != nil {
		return 0, 0, nil, fmt.Errorf("building POST %s: %w", path, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "picogate-device/"+c.cfg.Version)
	if signer != nil {
		if err := signer.Sign(req, body); err != nil {
			return 0, 0, nil, fmt.Errorf("signing POST %s: %w", path, err)
		}
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	c.clock.observe(resp.Header.Get("Date"))
	limit := c.cfg.MaxResponseBytes
	raw, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	if err != nil {
		return 0, 0, nil, fmt.Errorf("POST %s: reading the answer: %w", path, err)
	}
	if len(raw) > limit {
		return 0, 0, nil, fmt.Errorf("POST %s: answer over the %d-byte limit", path, limit)
	}
	switch code := resp.StatusCode; code {
	case http.StatusOK, http.StatusCreated:
		v, err := parseJSON(raw)
		if err != nil {
			return 0, 0, nil, fmt.Errorf("POST %s: answer: %w", path, err)
		}
		return code, 0, v, nil
	case http.StatusAccepted, http.StatusTooManyRequests, http.StatusServiceUnavailable:
		wait := DefaultPendingPoll
		if h := resp.Header.Get("Retry-After"); h != "" {
			wait = parseRetryAfter(h)
		}
		return code, max(wait, minRetryWait), nil, nil
	default:
		return 0, 0, nil, statusError(http.MethodPost, path, resp, raw)
	}
}

// syncClock sets the clock from GET /picogate/v1/time, which needs no credential. A failure is left to
// the signed request, whose refusal names the clock.
func (c *Client) syncClock(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.cfg.Gateway+"/picogate/v1/time", nil)
	if err != nil {
		return
	}
	req.Header.Set("User-Agent", "picogate-device/"+c.cfg.Version)
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1024))
	resp.Body.Close()
	c.clock.observe(resp.Header.Get("Date"))
}

// ValidHardwareID reports whether s is a hardware ID the enrollment protocol accepts: 1 to 64 of
// A-Z a-z 0-9 : . _ -. The board checks before it sends, and the gateway uses the same rule.
func ValidHardwareID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ':' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// waitingError is why a poll ended with ctx: the gateway's last answer was code (202: waiting for
// approval; 429 or 503: busy).
func waitingError(ctx context.Context, code int) error {
	if code == http.StatusAccepted {
		return fmt.Errorf("still waiting for an operator's approval: %w", context.Cause(ctx))
	}
	return fmt.Errorf("gateway busy (%d): %w", code, context.Cause(ctx))
}
