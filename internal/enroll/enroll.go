// Package enroll is device self-service on the gateway: enrollment with a short-lived token (the way a
// kubelet bootstraps with a bootstrap token, then gets its own credential), device-initiated credential
// rotation, and deregistration. It is opt-in (`picogate serve --enrollment`) because it is the only part
// of picogate that writes: device records and token use counts in the gateway's namespace, and a
// device's own Node and Lease when it deregisters.
//
// Every decision that several gateway replicas could race on is settled by the API server: a device
// record is created exactly once (create fails for the loser), and a token's use count and a record's
// credential are written with the resourceVersion they were read at (update fails for the loser, who
// reads again and decides again).
package enroll

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/picogate/picogate/internal/registry"
)

// Config configures an Enroller.
type Config struct {
	// Store reads and writes device records. Required.
	Store *registry.Store
	// Tokens reads and spends enrollment tokens. Required.
	Tokens *Tokens
	// Registry is the gateway's own view of the records: a new credential is returned only once this
	// gateway accepts it (or VisibleTimeout passes), so the device's next request does not meet a 401.
	// Nil skips the wait.
	Registry interface {
		ByName(name string) (*registry.Device, bool)
	}
	// DeleteNode deletes a deregistering device's Node and Lease (the gateway does it as the device, so
	// NodeRestriction confines it to that node). Required for Deregister.
	DeleteNode func(ctx context.Context, name string) error
	// RequireHMAC refuses enrollments that ask for token mode; the default mode is then hmac.
	RequireHMAC bool
	// PollInterval is the Retry-After of a request waiting for approval. Default 5s.
	PollInterval time.Duration
	// VisibleTimeout bounds the wait for the gateway's registry. Default 2s.
	VisibleTimeout time.Duration
	// Logger; default discards.
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Enroller runs enrollment, rotation and deregistration against the device records.
type Enroller struct {
	cfg Config
	log *slog.Logger
}

// New validates cfg and returns an Enroller.
func New(cfg Config) (*Enroller, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("enrollment: a device store is required"))
	}
	if cfg.Tokens == nil {
		errs = append(errs, errors.New("enrollment: a token store is required"))
	}
	if cfg.DeleteNode == nil {
		errs = append(errs, errors.New("enrollment: a node deleter is required"))
	}
	if cfg.PollInterval < 0 || cfg.VisibleTimeout < 0 {
		errs = append(errs, errors.New("enrollment: poll interval and visibility timeout must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 5 * time.Second
	}
	if cfg.VisibleTimeout == 0 {
		cfg.VisibleTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Enroller{cfg: cfg, log: cfg.Logger.With("component", "enroll")}, nil
}

// Request is a device's enrollment request (POST /picogate/v1/enroll).
type Request struct {
	Token      string            `json:"token"`
	Name       string            `json:"name"`
	HardwareID string            `json:"hardwareId"`
	Auth       registry.AuthMode `json:"auth,omitempty"`
}

// LogValue keeps the token out of logs.
func (r Request) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", r.Name), slog.String("hardwareId", r.HardwareID), slog.String("auth", string(r.Auth)))
}

// Result is the answer to an enrollment: Code 201 (a new device) or 200 (a new credential for an
// existing one) with Credential, or 202 while the request waits for approval.
type Result struct {
	Code       int
	Credential *registry.Credential
	Message    string
	RetryAfter time.Duration
}

// Error is a refusal the device should see: an HTTP status and a message saying why.
type Error struct {
	Code    int
	Message string
}

func (e *Error) Error() string { return e.Message }

func refusal(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Enroll handles one enrollment request, or one poll of a request waiting for approval (the same
// request sent again). It returns an *Error for refusals; any other error means the API server could not
// be reached or kept changing under it (the device retries later).
func (e *Enroller) Enroll(ctx context.Context, req Request) (Result, error) {
	if req.Auth == "" {
		req.Auth = registry.AuthToken
		if e.cfg.RequireHMAC {
			req.Auth = registry.AuthHMAC
		}
	}
	if err := e.validate(req); err != nil {
		return Result{}, err
	}
	st := &attempt{req: req, tokenHash: HashToken(req.Token)}
	var res Result
	err := wait.ExponentialBackoffWithContext(ctx, consumeBackoff, func(ctx context.Context) (bool, error) {
		var err error
		res, err = e.try(ctx, st)
		if apierrors.IsConflict(err) || errors.Is(err, registry.ErrExists) {
			return false, nil // someone wrote the record in between: read it again and decide again
		}
		return err == nil, err
	})
	if wait.Interrupted(err) {
		return Result{}, fmt.Errorf("enrolling %q: the device record kept changing; retry", req.Name)
	}
	return res, err
}

// attempt carries what one enrollment has done across its retries: a use spent is not spent again.
type attempt struct {
	req       Request
	tokenHash [sha256.Size]byte
	token     *TokenInfo // set once a use has been spent
}

func (e *Enroller) validate(req Request) error {
	var msgs []string
	if _, err := ParseToken(req.Token); err != nil {
		return refusal(http.StatusUnauthorized, "%v", ErrUnknownToken)
	}
	if err := registry.ValidateName(req.Name); err != nil {
		msgs = append(msgs, err.Error())
	}
	if !validHardwareID(req.HardwareID) {
		msgs = append(msgs, "hardwareId: want 1 to 64 characters of A-Z a-z 0-9 : . _ -")
	}
	switch req.Auth {
	case registry.AuthToken:
		if e.cfg.RequireHMAC {
			return refusal(http.StatusForbidden, "this gateway requires signed requests: enroll with \"auth\":\"hmac\"")
		}
	case registry.AuthHMAC:
	default:
		msgs = append(msgs, fmt.Sprintf("auth %q: want token or hmac", req.Auth))
	}
	if len(msgs) > 0 {
		return refusal(http.StatusBadRequest, "invalid enrollment request: %s", strings.Join(msgs, "; "))
	}
	return nil
}

func validHardwareID(s string) bool {
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

// try makes one pass: read the record, then poll, re-enroll or enroll.
func (e *Enroller) try(ctx context.Context, st *attempt) (Result, error) {
	rec, err := e.cfg.Store.Get(ctx, st.req.Name)
	if errors.Is(err, registry.ErrNotFound) {
		rec, err = nil, nil
	}
	if err != nil {
		return Result{}, err
	}
	if rec != nil && rec.Device.Enrollment != nil && e.isPoll(rec.Device, st) {
		if rec.Device.IsRevoked() {
			return Result{}, refusal(http.StatusConflict, "device %q was revoked while its enrollment waited", st.req.Name)
		}
		return e.poll(ctx, rec)
	}
	if err := e.spendUse(ctx, st, conflict(rec, st.req)); err != nil {
		return Result{}, err
	}
	if rec == nil {
		return e.create(ctx, st)
	}
	return e.reenroll(ctx, rec, st)
}

// isPoll reports whether this request is the one waiting in d's enrollment: same hardware id and the
// same enrollment token (which is the proof; the hardware id is not secret).
func (e *Enroller) isPoll(d *registry.Device, st *attempt) bool {
	return d.HardwareID == st.req.HardwareID && subtle.ConstantTimeCompare(d.Enrollment.TokenHash[:], st.tokenHash[:]) == 1
}

// conflict is why an existing record cannot be enrolled by this request, or nil. It is only told to a
// holder of a valid token (spendUse checks the token first), so nobody can probe names without one.
func conflict(rec *registry.Record, req Request) error {
	if rec == nil {
		return nil
	}
	d := rec.Device
	switch {
	case d.HardwareID == "" || d.HardwareID != req.HardwareID:
		return refusal(http.StatusConflict, "the name %q belongs to another device", req.Name)
	case d.IsRevoked():
		return refusal(http.StatusConflict, "device %q is revoked: an operator must remove it (picogate device remove %s) before it can enroll again", req.Name, req.Name)
	case d.Enrollment != nil:
		return refusal(http.StatusConflict, "an enrollment of %q with another token is waiting for approval", req.Name)
	}
	return nil
}

// spendUse checks the token and spends one use, once per enrollment whatever the retries.
func (e *Enroller) spendUse(ctx context.Context, st *attempt, conflictErr error) error {
	check := func(t *TokenInfo) error {
		if !strings.HasPrefix(st.req.Name, t.Prefix) {
			return refusal(http.StatusForbidden, "this enrollment token may only enroll names starting with %q", t.Prefix)
		}
		return conflictErr
	}
	if st.token != nil {
		return check(st.token)
	}
	info, err := e.cfg.Tokens.Consume(ctx, st.req.Token, check)
	switch {
	case errors.Is(err, ErrUnknownToken):
		return refusal(http.StatusUnauthorized, "%v", err)
	case errors.Is(err, ErrTokenExpired), errors.Is(err, ErrTokenExhausted):
		return refusal(http.StatusGone, "%v", err)
	case err != nil:
		return err
	}
	st.token = info
	return nil
}

func (e *Enroller) pending(st *attempt) *registry.Enrollment {
	return &registry.Enrollment{Requested: e.cfg.Now(), Auth: st.req.Auth, TokenHash: st.tokenHash}
}

func (e *Enroller) waiting(name string) Result {
	return Result{Code: http.StatusAccepted, RetryAfter: e.cfg.PollInterval,
		Message: fmt.Sprintf("enrollment of %q is waiting for an operator: picogate device approve %s; send the same request again", name, name)}
}

func (e *Enroller) create(ctx context.Context, st *attempt) (Result, error) {
	d := &registry.Device{Name: st.req.Name, HardwareID: st.req.HardwareID, EnrolledBy: st.token.ID, Created: e.cfg.Now()}
	if st.token.Approve == ApproveManual {
		d.Auth, d.Enrollment = st.req.Auth, e.pending(st)
		if err := e.cfg.Store.Create(ctx, d); err != nil {
			return Result{}, err
		}
		e.log.Info("enrollment waiting for approval", "device", d.Name, "hardwareId", d.HardwareID, "token", st.token.ID)
		return e.waiting(d.Name), nil
	}
	cred, err := registry.IssueCredential(d, st.req.Auth)
	if err != nil {
		return Result{}, err
	}
	if err := e.cfg.Store.Create(ctx, d); err != nil {
		return Result{}, err
	}
	e.log.Info("device enrolled", "device", d.Name, "hardwareId", d.HardwareID, "auth", d.Auth, "token", st.token.ID)
	e.awaitVisible(ctx, cred)
	return Result{Code: http.StatusCreated, Credential: &cred}, nil
}

// reenroll gives an existing device (same name, same hardware id: a board that lost its flash) a new
// credential, or with a manual token records the request; the current credential keeps working until
// the new one is issued.
func (e *Enroller) reenroll(ctx context.Context, rec *registry.Record, st *attempt) (Result, error) {
	d := rec.Device
	d.EnrolledBy = st.token.ID
	if st.token.Approve == ApproveManual {
		d.Enrollment = e.pending(st)
		if err := e.cfg.Store.Update(ctx, rec); err != nil {
			return Result{}, err
		}
		e.log.Info("re-enrollment waiting for approval", "device", d.Name, "token", st.token.ID)
		return e.waiting(d.Name), nil
	}
	cred, err := registry.IssueCredential(d, st.req.Auth)
	if err != nil {
		return Result{}, err
	}
	if err := e.cfg.Store.Update(ctx, rec); err != nil {
		return Result{}, err
	}
	e.log.Info("device re-enrolled", "device", d.Name, "auth", d.Auth, "token", st.token.ID)
	e.awaitVisible(ctx, cred)
	return Result{Code: http.StatusOK, Credential: &cred}, nil
}

// poll answers a request waiting for approval: 202 again, or, once approved, the credential (once: the
// record then has it and no enrollment, so the same request again is a re-enrollment).
func (e *Enroller) poll(ctx context.Context, rec *registry.Record) (Result, error) {
	d := rec.Device
	if d.Enrollment.Approved.IsZero() {
		return e.waiting(d.Name), nil
	}
	cred, err := registry.IssueCredential(d, d.Enrollment.Auth)
	if err != nil {
		return Result{}, err
	}
	d.Enrollment = nil
	if err := e.cfg.Store.Update(ctx, rec); err != nil {
		return Result{}, err
	}
	e.log.Info("approved device collected its credential", "device", d.Name, "auth", d.Auth)
	e.awaitVisible(ctx, cred)
	return Result{Code: http.StatusOK, Credential: &cred}, nil
}

// Rotate issues a second credential for an authenticated device; the current one stays valid until the
// new one is first used (PromoteNext).
func (e *Enroller) Rotate(ctx context.Context, name string) (registry.Credential, error) {
	var cred registry.Credential
	err := wait.ExponentialBackoffWithContext(ctx, consumeBackoff, func(ctx context.Context) (bool, error) {
		rec, err := e.cfg.Store.Get(ctx, name)
		if err != nil {
			return false, err
		}
		if rec.Device.IsRevoked() {
			return false, refusal(http.StatusUnauthorized, "device %q is revoked", name)
		}
		if cred, err = registry.IssueNext(rec.Device); err != nil {
			return false, refusal(http.StatusBadRequest, "%v", err)
		}
		if err := e.cfg.Store.Update(ctx, rec); apierrors.IsConflict(err) {
			return false, nil
		} else if err != nil {
			return false, err
		}
		return true, nil
	})
	if wait.Interrupted(err) {
		return registry.Credential{}, fmt.Errorf("rotating %q: the device record kept changing; retry", name)
	}
	if err != nil {
		return registry.Credential{}, err
	}
	e.log.Info("device rotated its credential", "device", name)
	e.awaitVisible(ctx, cred)
	return cred, nil
}

// Deregister removes an authenticated device: revoked, Node and Lease deleted, record deleted.
func (e *Enroller) Deregister(ctx context.Context, name string) error {
	if err := e.cfg.Store.RemoveWith(ctx, name, e.cfg.DeleteNode); err != nil {
		return err
	}
	e.log.Info("device deregistered itself", "device", name)
	return nil
}

// awaitVisible waits, bounded, until this gateway's registry accepts cred.
func (e *Enroller) awaitVisible(ctx context.Context, cred registry.Credential) {
	if e.cfg.Registry == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.VisibleTimeout)
	defer cancel()
	_ = wait.PollUntilContextCancel(ctx, 5*time.Millisecond, true, func(context.Context) (bool, error) {
		d, ok := e.cfg.Registry.ByName(cred.Name)
		return ok && accepts(d, cred), nil
	})
}

// accepts reports whether d holds cred as its current or next credential.
func accepts(d *registry.Device, cred registry.Credential) bool {
	switch cred.Auth {
	case registry.AuthToken:
		h := registry.HashToken(cred.Token)
		return d.TokenHash == h || d.NextTokenHash == h
	case registry.AuthHMAC:
		k := hexKey(cred.Key)
		return k != nil && (bytes.Equal(d.Key, k) || bytes.Equal(d.NextKey, k))
	}
	return false
}

func hexKey(s string) []byte {
	k, err := hex.DecodeString(s)
	if err != nil || len(k) != registry.KeySize {
		return nil
	}
	return k
}
