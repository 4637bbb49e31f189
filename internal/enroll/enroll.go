// Package enroll is device self-service on the gateway: enrollment with a short-lived token (the way a
// kubelet bootstraps with a bootstrap token, then gets its own credential), device-initiated credential
// rotation, and deregistration. It is opt-in (`picogate serve --enrollment`) because it is the only part
// of picogate that writes: device records and token use counts in the gateway's namespace, and a
// device's own Node and Lease when it deregisters.
//
// Device names share the namespace of real nodes. Every token carries a name prefix; a name whose Node
// exists without registry.NodeMarkerLabel (a real node) is never enrolled; deregistration deletes only
// a Node that carries the marker. An existing device is re-enrolled only with proof: the request is
// authenticated with the device's current credential, or an operator approves it. In hmac mode the key
// is agreed (X25519 against the gateway's pinned static key, HKDF over a transcript: package device),
// never sent.
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

	"github.com/picogate/picogate/device"
	"github.com/picogate/picogate/internal/registry"
	"github.com/picogate/picogate/internal/status"
)

// Config configures an Enroller.
type Config struct {
	// Store reads and writes device records. Required.
	Store *registry.Store
	// Tokens reads and spends enrollment tokens. Required.
	Tokens *Tokens
	// Nodes reads Nodes with the gateway's own identity: a name whose Node is not a device's is refused.
	// Required.
	Nodes registry.NodeGetter
	// Keys holds the gateway's static key for hmac key agreement. Required.
	Keys interface {
		Get(ctx context.Context) (*GatewayKey, error)
	}
	// Registry is the gateway's own view of the records: a new credential is returned only once this
	// gateway accepts it (or VisibleTimeout passes), so the device's next request does not meet a 401.
	// Nil skips the wait.
	Registry interface {
		ByName(name string) (*registry.Device, bool)
	}
	// DeleteNode deletes a deregistering device's Node and Lease if the Node is the device's (the
	// gateway does it as the device, so NodeRestriction confines it to that node). Required.
	DeleteNode func(ctx context.Context, name string) (registry.NodeOutcome, error)
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
	if cfg.Nodes == nil {
		errs = append(errs, errors.New("enrollment: a node reader is required"))
	}
	if cfg.Keys == nil {
		errs = append(errs, errors.New("enrollment: the gateway key is required"))
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
	// EphemeralKey is the board's fresh X25519 public key, 64 hex digits: required for auth hmac (the
	// key is agreed, never sent), refused for auth token.
	EphemeralKey string `json:"ephemeralKey,omitempty"`
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

// refusal is an answer the device should see: an HTTP status and a message saying why.
func refusal(code int, format string, args ...any) *status.Error {
	return &status.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Enroll handles one enrollment request, or one poll of a request waiting for approval (the same
// request sent again). authed is the device the request was authenticated as (it carried that
// device's current credential), or nil: it is the proof that lets an existing device re-enroll without
// an operator's approval. It returns a *status.Error for refusals; any other error means the API server could
// not be reached or kept changing under it (the device retries later).
func (e *Enroller) Enroll(ctx context.Context, req Request, authed *registry.Device) (Result, error) {
	if req.Auth == "" {
		req.Auth = registry.AuthToken
		if e.cfg.RequireHMAC {
			req.Auth = registry.AuthHMAC
		}
	}
	if err := e.validate(req, authed); err != nil {
		return Result{}, err
	}
	st := &attempt{req: req, tokenHash: HashToken(req.Token), authed: authed}
	if req.Auth == registry.AuthHMAC {
		if err := e.agree(ctx, st); err != nil {
			return Result{}, err
		}
	}
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
	authed    *registry.Device
	token     *TokenInfo // set once a use has been spent

	// hmac mode: the board's ephemeral key, and the key and confirmation agreed with it.
	ephemeral, key, confirm []byte
}

func (e *Enroller) validate(req Request, authed *registry.Device) error {
	var msgs []string
	if _, err := ParseToken(req.Token); err != nil {
		return refusal(http.StatusUnauthorized, "%v", ErrUnknownToken)
	}
	if err := registry.ValidateName(req.Name); err != nil {
		msgs = append(msgs, err.Error())
	}
	if !device.ValidHardwareID(req.HardwareID) {
		msgs = append(msgs, "hardwareId: want 1 to 64 characters of A-Z a-z 0-9 : . _ -")
	}
	switch req.Auth {
	case registry.AuthToken:
		if e.cfg.RequireHMAC {
			return refusal(http.StatusForbidden, "this gateway requires signed requests: enroll with \"auth\":\"hmac\"")
		}
		if req.EphemeralKey != "" {
			msgs = append(msgs, "ephemeralKey: only for auth hmac (a token is sent, not agreed)")
		}
	case registry.AuthHMAC:
		if k, err := hex.DecodeString(req.EphemeralKey); err != nil || len(k) != device.GatewayKeySize {
			msgs = append(msgs, "ephemeralKey: auth hmac needs the board's X25519 public key, 64 hex digits (the key is agreed, never sent: docs/device-protocol.md, \"Key agreement\")")
		}
	default:
		msgs = append(msgs, fmt.Sprintf("auth %q: want token or hmac", req.Auth))
	}
	if len(msgs) > 0 {
		return refusal(http.StatusBadRequest, "invalid enrollment request: %s", strings.Join(msgs, "; "))
	}
	if authed != nil && authed.Name != req.Name {
		return refusal(http.StatusForbidden, "this request carries the credential of device %q: it cannot enroll %q", authed.Name, req.Name)
	}
	return nil
}

// agree derives the hmac key of this enrollment from the board's ephemeral key and the gateway's
// static key, before anything is read or spent: a bad ephemeral key is a 400, a gateway key not loaded
// yet a retry. The key depends only on the request, so a poll after approval derives the same one.
func (e *Enroller) agree(ctx context.Context, st *attempt) error {
	gk, err := e.cfg.Keys.Get(ctx)
	if err != nil {
		return err
	}
	st.ephemeral, _ = hex.DecodeString(st.req.EphemeralKey)
	dh, err := gk.shared(st.ephemeral)
	if err != nil {
		return refusal(http.StatusBadRequest, "invalid enrollment request: %v", err)
	}
	th := device.EnrollTranscript(gk.pub, st.ephemeral, st.req.Name, st.req.HardwareID, st.req.Token)
	if st.key, st.confirm, err = device.DeriveKey(dh, th); err != nil {
		return refusal(http.StatusBadRequest, "invalid enrollment request: ephemeralKey: %v", err)
	}
	return nil
}

// try makes one pass: read the record and the name's Node, then poll, re-enroll or enroll.
func (e *Enroller) try(ctx context.Context, st *attempt) (Result, error) {
	name := st.req.Name
	rec, err := e.cfg.Store.Get(ctx, name)
	if errors.Is(err, registry.ErrNotFound) {
		rec, err = nil, nil
	}
	if err != nil {
		return Result{}, err
	}
	nodeErr := registry.CheckNodeName(ctx, e.cfg.Nodes, name)
	if errors.Is(nodeErr, registry.ErrNotDeviceNode) {
		nodeErr = refusal(http.StatusConflict, "the name %q belongs to a node picogate did not create for a device (a real node): a device can never have it; choose another name", name)
	} else if nodeErr != nil {
		return Result{}, nodeErr
	}
	if rec != nil && st.authed == nil && rec.Device.Enrollment != nil && e.isPoll(rec.Device, st) {
		if rec.Device.IsRevoked() {
			return Result{}, refusal(http.StatusConflict, "device %q was revoked while its enrollment waited", name)
		}
		if nodeErr != nil {
			return Result{}, nodeErr
		}
		return e.poll(ctx, rec, st)
	}
	conflictErr := nodeErr
	if conflictErr == nil {
		conflictErr = conflict(rec, st)
	}
	if err := e.spendUse(ctx, st, conflictErr); err != nil {
		return Result{}, err
	}
	switch {
	case rec == nil:
		return e.create(ctx, st)
	case st.authed != nil:
		return e.reenroll(ctx, rec, st)
	default:
		return e.reenrollPending(ctx, rec, st)
	}
}

// isPoll reports whether this request is the one waiting in d's enrollment: same hardware id and the
// same enrollment token (which is the proof; the hardware id is not secret).
func (e *Enroller) isPoll(d *registry.Device, st *attempt) bool {
	return d.HardwareID == st.req.HardwareID && subtle.ConstantTimeCompare(d.Enrollment.TokenHash[:], st.tokenHash[:]) == 1
}

// conflict is why an existing record cannot be enrolled by this request, or nil. It is only told to a
// holder of a valid token (spendUse checks the token first), so nobody can probe names without one. A
// request authenticated as the device itself has proved the name is its own.
func conflict(rec *registry.Record, st *attempt) error {
	if rec == nil || st.authed != nil {
		return nil
	}
	d, name := rec.Device, st.req.Name
	switch {
	case d.HardwareID == "" || d.HardwareID != st.req.HardwareID:
		return refusal(http.StatusConflict, "the name %q belongs to another device", name)
	case d.IsRevoked():
		return refusal(http.StatusConflict, "device %q is revoked: an operator must remove it (picogate device remove %s) before it can enroll again", name, name)
	case d.Enrollment != nil:
		return refusal(http.StatusConflict, "an enrollment of %q with another token is waiting for approval", name)
	}
	return nil
}

// spendUse checks the token and spends one use, once per enrollment whatever the retries.
func (e *Enroller) spendUse(ctx context.Context, st *attempt, conflictErr error) error {
	check := func(t *TokenInfo) error {
		if t.Prefix == "" {
			return refusal(http.StatusForbidden, "enrollment token %s has no name prefix (made by an older picogate): it could name a real node, so it is refused; revoke it (picogate token revoke %s) and create one with --prefix", t.ID, t.ID)
		}
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
	return &registry.Enrollment{Requested: e.cfg.Now(), Auth: st.req.Auth, TokenHash: st.tokenHash, EphemeralKey: st.ephemeral}
}

func (e *Enroller) waiting(name string, reenroll bool) Result {
	msg := fmt.Sprintf("enrollment of %q is waiting for an operator: picogate device approve %s; send the same request again", name, name)
	if reenroll {
		msg = fmt.Sprintf("%q is an enrolled device: re-enrolling it needs its current credential on the request, or an operator's approval (picogate device approve %s); send the same request again", name, name)
	}
	return Result{Code: http.StatusAccepted, RetryAfter: e.cfg.PollInterval, Message: msg}
}

// issue gives d the credential this request asked for, and says how to recognise it in the registry.
func (e *Enroller) issue(d *registry.Device, st *attempt) (registry.Credential, func(*registry.Device) bool, error) {
	if st.req.Auth == registry.AuthHMAC {
		key := st.key
		return registry.IssueAgreedKey(d, key, st.confirm), func(x *registry.Device) bool {
			return bytes.Equal(x.Key, key) || bytes.Equal(x.NextKey, key)
		}, nil
	}
	cred, err := registry.IssueCredential(d, registry.AuthToken)
	if err != nil {
		return registry.Credential{}, nil, err
	}
	h := registry.HashToken(cred.Token)
	return cred, func(x *registry.Device) bool { return x.TokenHash == h || x.NextTokenHash == h }, nil
}

func (e *Enroller) create(ctx context.Context, st *attempt) (Result, error) {
	d := &registry.Device{Name: st.req.Name, HardwareID: st.req.HardwareID, EnrolledBy: st.token.ID, Created: e.cfg.Now()}
	if st.token.Approve == ApproveManual {
		d.Auth, d.Enrollment = st.req.Auth, e.pending(st)
		if err := e.cfg.Store.Create(ctx, d); err != nil {
			return Result{}, err
		}
		e.log.Info("enrollment waiting for approval", "device", d.Name, "hardwareId", d.HardwareID, "token", st.token.ID)
		return e.waiting(d.Name, false), nil
	}
	cred, accepted, err := e.issue(d, st)
	if err != nil {
		return Result{}, err
	}
	if err := e.cfg.Store.Create(ctx, d); err != nil {
		return Result{}, err
	}
	e.log.Info("device enrolled", "device", d.Name, "hardwareId", d.HardwareID, "auth", d.Auth, "token", st.token.ID)
	e.awaitVisible(ctx, d.Name, accepted)
	return Result{Code: http.StatusCreated, Credential: &cred}, nil
}

// reenroll gives an existing device a new credential at once: the request carried its current
// credential, which is the proof (a device switching to hmac mode, or replacing a key it suspects).
func (e *Enroller) reenroll(ctx context.Context, rec *registry.Record, st *attempt) (Result, error) {
	d := rec.Device
	d.EnrolledBy, d.HardwareID, d.Enrollment = st.token.ID, st.req.HardwareID, nil
	cred, accepted, err := e.issue(d, st)
	if err != nil {
		return Result{}, err
	}
	if err := e.cfg.Store.Update(ctx, rec); err != nil {
		return Result{}, err
	}
	e.log.Info("device re-enrolled with its current credential", "device", d.Name, "auth", d.Auth, "token", st.token.ID)
	e.awaitVisible(ctx, d.Name, accepted)
	return Result{Code: http.StatusOK, Credential: &cred}, nil
}

// reenrollPending records a re-enrollment without proof (a board whose flash was wiped, or anyone who
// knows its name and hardware id, which are no secret): it waits for an operator's approval whatever
// the token's approve mode, and the current credential keeps working meanwhile.
func (e *Enroller) reenrollPending(ctx context.Context, rec *registry.Record, st *attempt) (Result, error) {
	d := rec.Device
	d.EnrolledBy, d.Enrollment = st.token.ID, e.pending(st)
	if err := e.cfg.Store.Update(ctx, rec); err != nil {
		return Result{}, err
	}
	e.log.Info("re-enrollment waiting for approval", "device", d.Name, "token", st.token.ID)
	return e.waiting(d.Name, true), nil
}

// poll answers a request waiting for approval: 202 again, or, once approved, the credential (once: the
// record then has it and no enrollment, so the same request again is a re-enrollment). A request with
// another ephemeral key or auth mode is a new request (the board restarted, or someone else holds the
// token): it replaces the waiting one, and an approval given to that one is withdrawn, since the
// operator approved a request, not a name.
func (e *Enroller) poll(ctx context.Context, rec *registry.Record, st *attempt) (Result, error) {
	d := rec.Device
	reenroll := d.HasCredential()
	if en := d.Enrollment; en.Auth != st.req.Auth || !bytes.Equal(en.EphemeralKey, st.ephemeral) {
		d.Enrollment = e.pending(st)
		if err := e.cfg.Store.Update(ctx, rec); err != nil {
			return Result{}, err
		}
		e.log.Info("enrollment waiting for approval replaced by a new request; any approval withdrawn", "device", d.Name)
		return e.waiting(d.Name, reenroll), nil
	}
	if d.Enrollment.Approved.IsZero() {
		return e.waiting(d.Name, reenroll), nil
	}
	d.Enrollment = nil
	cred, accepted, err := e.issue(d, st)
	if err != nil {
		return Result{}, err
	}
	if err := e.cfg.Store.Update(ctx, rec); err != nil {
		return Result{}, err
	}
	e.log.Info("approved device collected its credential", "device", d.Name, "auth", d.Auth)
	e.awaitVisible(ctx, d.Name, accepted)
	return Result{Code: http.StatusOK, Credential: &cred}, nil
}

// RotateRequest is a device's rotation: the authenticated device, the key its request was signed with
// (hmac mode), and the board's fresh ephemeral key (hmac mode, 32 bytes).
type RotateRequest struct {
	Device       *registry.Device
	SignedWith   []byte
	EphemeralKey []byte
}

// Rotate issues a second credential for an authenticated device; the current one stays valid until the
// new one is first used (PromoteNext). An hmac device's next key is agreed, bound to the key that signed
// the request (RotateTranscript), and the answer carries only its confirmation.
func (e *Enroller) Rotate(ctx context.Context, req RotateRequest) (registry.Credential, error) {
	name := req.Device.Name
	var key, confirm []byte
	switch req.Device.Auth {
	case registry.AuthHMAC:
		if len(req.EphemeralKey) == 0 {
			return registry.Credential{}, refusal(http.StatusBadRequest, "an hmac device rotates by key agreement: send {\"ephemeralKey\": hex(E)} (docs/device-protocol.md, \"Key agreement\")")
		}
		if len(req.SignedWith) == 0 {
			return registry.Credential{}, refusal(http.StatusUnauthorized, "an hmac device's rotation must be signed with its current key")
		}
		gk, err := e.cfg.Keys.Get(ctx)
		if err != nil {
			return registry.Credential{}, err
		}
		dh, err := gk.shared(req.EphemeralKey)
		if err != nil {
			return registry.Credential{}, refusal(http.StatusBadRequest, "invalid rotation request: %v", err)
		}
		if key, confirm, err = device.DeriveKey(dh, device.RotateTranscript(gk.pub, req.EphemeralKey, name, req.SignedWith)); err != nil {
			return registry.Credential{}, refusal(http.StatusBadRequest, "invalid rotation request: ephemeralKey: %v", err)
		}
	case registry.AuthToken:
		if len(req.EphemeralKey) > 0 {
			return registry.Credential{}, refusal(http.StatusBadRequest, "ephemeralKey is for hmac devices: a token device's rotation has no body")
		}
	}
	var cred registry.Credential
	var accepted func(*registry.Device) bool
	err := wait.ExponentialBackoffWithContext(ctx, consumeBackoff, func(ctx context.Context) (bool, error) {
		rec, err := e.cfg.Store.Get(ctx, name)
		if err != nil {
			return false, err
		}
		d := rec.Device
		switch {
		case d.IsRevoked():
			return false, refusal(http.StatusUnauthorized, "device %q is revoked", name)
		case d.Auth != req.Device.Auth:
			return false, refusal(http.StatusConflict, "device %q changed its auth mode meanwhile; retry", name)
		case key != nil:
			if !bytes.Equal(req.SignedWith, d.Key) && !bytes.Equal(req.SignedWith, d.NextKey) {
				return false, refusal(http.StatusUnauthorized, "the key this rotation was signed with is no longer device %q's", name)
			}
			cred = registry.IssueAgreedNext(d, req.SignedWith, key, confirm)
			accepted = func(x *registry.Device) bool { return bytes.Equal(x.NextKey, key) || bytes.Equal(x.Key, key) }
		default:
			if cred, err = registry.IssueNext(d); err != nil {
				return false, refusal(http.StatusBadRequest, "%v", err)
			}
			h := registry.HashToken(cred.Token)
			accepted = func(x *registry.Device) bool { return x.NextTokenHash == h || x.TokenHash == h }
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
	e.awaitVisible(ctx, name, accepted)
	return cred, nil
}

// Deregister removes an authenticated device: revoked, its Node and Lease deleted if the Node is the
// device's (a real node that has the name is left alone), record deleted. An ip-mode device is
// refused: it is recognised by its address alone, so anyone who can send from that address could
// deregister it; an operator removes it.
func (e *Enroller) Deregister(ctx context.Context, d *registry.Device) (registry.NodeOutcome, error) {
	if d.Auth == registry.AuthIP {
		return registry.NodeAbsent, refusal(http.StatusForbidden, "device %q is recognised by its address alone, which proves too little to deregister it: an operator removes it with picogate device remove %s", d.Name, d.Name)
	}
	out, err := e.cfg.Store.RemoveWith(ctx, d.Name, e.cfg.DeleteNode)
	if err != nil {
		return out, err
	}
	e.log.Info("device deregistered itself", "device", d.Name, "node", out.Describe(d.Name))
	return out, nil
}

// awaitVisible waits, bounded, until this gateway's registry holds device name with accepted true.
func (e *Enroller) awaitVisible(ctx context.Context, name string, accepted func(*registry.Device) bool) {
	if e.cfg.Registry == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.VisibleTimeout)
	defer cancel()
	_ = wait.PollUntilContextCancel(ctx, 5*time.Millisecond, true, func(context.Context) (bool, error) {
		d, ok := e.cfg.Registry.ByName(name)
		return ok && accepted(d), nil
	})
}
