package enroll

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/picogate/picogate/device"
	"github.com/picogate/picogate/internal/registry"
	"github.com/picogate/picogate/internal/status"
)

// MaxRequestBytes caps an enrollment request body; a real one is about 150 bytes.
const MaxRequestBytes = 4096

// HandlersConfig configures the HTTP endpoints.
type HandlersConfig struct {
	// Enroller does the work. Required.
	Enroller *Enroller
	// DeviceFrom returns the authenticated device of a request (gateway.DeviceFrom). Required.
	DeviceFrom func(*http.Request) *registry.Device
	// SigningKey returns the key a signed request was verified with (gateway.SigningKey): an hmac
	// device's next key is bound to it. Required.
	SigningKey func(*http.Request) []byte
	// Refuse answers a refusal: the gateway's one way to refuse (gateway.Refuse), which writes the
	// Status and records the reason in its access log. Required.
	Refuse func(w http.ResponseWriter, r *http.Request, e *status.Error)
	// EnrollRate and EnrollBurst bound enrollment requests across all sources (unauthenticated requests
	// that each cost the API server a few calls). Default 10/s, burst 20.
	EnrollRate  float64
	EnrollBurst int
	// SourceRate and SourceBurst bound each source address (an IPv6 one by its /64), spent before the
	// global bound, so one address cannot use it up. Default 5/s, burst 10: half the global bound, so
	// a source sending junk leaves the other half to everyone else, and a board (one request, then one
	// poll per Retry-After) or a few behind one NAT never meet it.
	SourceRate  float64
	SourceBurst int
	// MaxSources bounds how many sources are tracked at once. Default 4096.
	MaxSources int
	// Timeout bounds the work of one request against the API server. Default 10s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Handlers serves POST /picogate/v1/enroll, /rotate and /deregister.
type Handlers struct {
	cfg    HandlersConfig
	limits *sourceLimits
	log    *slog.Logger
}

// NewHandlers validates cfg and builds the handlers.
func NewHandlers(cfg HandlersConfig) (*Handlers, error) {
	var errs []error
	if cfg.Enroller == nil {
		errs = append(errs, errors.New("enrollment handlers: an enroller is required"))
	}
	if cfg.DeviceFrom == nil || cfg.SigningKey == nil || cfg.Refuse == nil {
		errs = append(errs, errors.New("enrollment handlers: DeviceFrom, SigningKey and Refuse are required"))
	}
	if cfg.EnrollRate < 0 || cfg.EnrollBurst < 0 || cfg.SourceRate < 0 || cfg.SourceBurst < 0 || cfg.MaxSources < 0 || cfg.Timeout < 0 {
		errs = append(errs, errors.New("enrollment handlers: rates, bursts, source count and timeout must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.EnrollRate == 0 {
		cfg.EnrollRate = 10
	}
	if cfg.EnrollBurst == 0 {
		cfg.EnrollBurst = 20
	}
	if cfg.SourceRate == 0 {
		cfg.SourceRate = 5
	}
	if cfg.SourceBurst == 0 {
		cfg.SourceBurst = 10
	}
	if cfg.MaxSources == 0 {
		cfg.MaxSources = 4096
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	limits := newSourceLimits(cfg.EnrollRate, cfg.EnrollBurst, cfg.SourceRate, cfg.SourceBurst, cfg.MaxSources)
	return &Handlers{cfg: cfg, limits: limits, log: cfg.Logger.With("component", "enroll")}, nil
}

// DecodeRequest parses an enrollment request body: one JSON object with the fields of Request and no
// others (a misspelt field is a firmware bug worth a clear 400, not a silent default).
func DecodeRequest(body []byte) (Request, error) {
	var req Request
	if len(body) > MaxRequestBytes {
		return Request{}, errors.New("enrollment request over " + strconv.Itoa(MaxRequestBytes) + " bytes")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return Request{}, errors.New("enrollment request is not a JSON object of token, name, hardwareId, auth and ephemeralKey: " + err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return Request{}, errors.New("enrollment request: data after the JSON object")
	}
	return req, nil
}

// Enroll serves POST /picogate/v1/enroll. A request may carry the device's current credential (it is
// then authenticated like any device request): that is the proof that re-enrolls an existing device
// without an operator's approval.
func (h *Handlers) Enroll(w http.ResponseWriter, r *http.Request) {
	if !h.limits.allow(sourceOf(r), time.Now()) {
		h.refuse(w, r, http.StatusTooManyRequests, "too many enrollment requests; retry", time.Second)
		return
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.cfg.Timeout))
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxRequestBytes+1))
	if err != nil {
		h.refuse(w, r, http.StatusBadRequest, "reading the enrollment request: "+err.Error(), 0)
		return
	}
	req, err := DecodeRequest(body)
	if err != nil {
		h.refuse(w, r, http.StatusBadRequest, err.Error(), 0)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Timeout)
	defer cancel()
	res, err := h.cfg.Enroller.Enroll(ctx, req, h.cfg.DeviceFrom(r))
	if err != nil {
		h.fail(w, r, "enrollment", err)
		return
	}
	if res.Credential == nil {
		writeJSON(w, res.Code, res.RetryAfter, pendingStatus(res))
		return
	}
	writeJSON(w, res.Code, 0, res.Credential)
}

// sourceOf is the address a request came from (invalid if unknown).
func sourceOf(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// rotateBody is the body of an hmac device's rotation; a token device's has none.
type rotateBody struct {
	EphemeralKey string `json:"ephemeralKey"`
}

// decodeRotate parses a rotation body: empty, or one JSON object with ephemeralKey (64 hex digits).
func decodeRotate(body []byte) ([]byte, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	var rb rotateBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rb); err != nil {
		return nil, errors.New("rotation request is not a JSON object of ephemeralKey: " + err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("rotation request: data after the JSON object")
	}
	k, err := hex.DecodeString(rb.EphemeralKey)
	if err != nil || len(k) != device.GatewayKeySize {
		return nil, errors.New("rotation request: ephemeralKey: want the board's X25519 public key, 64 hex digits")
	}
	return k, nil
}

// Rotate serves POST /picogate/v1/rotate for an authenticated device.
func (h *Handlers) Rotate(w http.ResponseWriter, r *http.Request) {
	d := h.cfg.DeviceFrom(r)
	if d == nil {
		h.refuse(w, r, http.StatusUnauthorized, "rotation needs the device's own credential", 0)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxRequestBytes+1))
	if err != nil || len(body) > MaxRequestBytes {
		h.refuse(w, r, http.StatusBadRequest, "reading the rotation request: at most "+strconv.Itoa(MaxRequestBytes)+" bytes", 0)
		return
	}
	eph, err := decodeRotate(body)
	if err != nil {
		h.refuse(w, r, http.StatusBadRequest, err.Error(), 0)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Timeout)
	defer cancel()
	cred, err := h.cfg.Enroller.Rotate(ctx, RotateRequest{Device: d, SignedWith: h.cfg.SigningKey(r), EphemeralKey: eph})
	if err != nil {
		h.fail(w, r, "rotation", err)
		return
	}
	writeJSON(w, http.StatusOK, 0, cred)
}

// Deregister serves POST /picogate/v1/deregister for an authenticated device.
func (h *Handlers) Deregister(w http.ResponseWriter, r *http.Request) {
	d := h.cfg.DeviceFrom(r)
	if d == nil {
		h.refuse(w, r, http.StatusUnauthorized, "deregistration needs the device's own credential", 0)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Timeout)
	defer cancel()
	out, err := h.cfg.Enroller.Deregister(ctx, d)
	if err != nil {
		h.fail(w, r, "deregistration", err)
		return
	}
	writeJSON(w, http.StatusOK, 0, successStatus("device "+d.Name+" deregistered: its credential and record are gone; "+out.Describe(d.Name)))
}

func (h *Handlers) fail(w http.ResponseWriter, r *http.Request, what string, err error) {
	var refused *status.Error
	if errors.As(err, &refused) {
		h.cfg.Refuse(w, r, refused)
		return
	}
	h.log.Warn(what+" failed", "err", err)
	h.refuse(w, r, http.StatusServiceUnavailable, what+" could not be completed (the Kubernetes API server is unavailable or busy); retry", 5*time.Second)
}

func (h *Handlers) refuse(w http.ResponseWriter, r *http.Request, code int, msg string, retry time.Duration) {
	h.cfg.Refuse(w, r, &status.Error{Code: code, Message: msg, RetryAfter: retry})
}

// statusObject is a Kubernetes Status for answers that are not failures.
type statusObject struct {
	Kind       string   `json:"kind"`
	APIVersion string   `json:"apiVersion"`
	Metadata   struct{} `json:"metadata"`
	Status     string   `json:"status"`
	Message    string   `json:"message"`
	Reason     string   `json:"reason,omitempty"`
	Code       int      `json:"code"`
}

func pendingStatus(res Result) statusObject {
	return statusObject{Kind: "Status", APIVersion: "v1", Status: "Pending", Message: res.Message, Reason: "PendingApproval", Code: res.Code}
}

func successStatus(msg string) statusObject {
	return statusObject{Kind: "Status", APIVersion: "v1", Status: "Success", Message: msg, Code: http.StatusOK}
}

// writeJSON answers with a Content-Length (devices cannot read chunked bodies) and no caching: a
// credential must never be stored by anything in between.
func writeJSON(w http.ResponseWriter, code int, retry time.Duration, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status.Write(w, http.StatusInternalServerError, "encoding the answer failed")
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Content-Length", strconv.Itoa(len(b)))
	hd.Set("Cache-Control", "no-store")
	if retry > 0 {
		hd.Set("Retry-After", strconv.Itoa(int(retry/time.Second)))
	}
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
