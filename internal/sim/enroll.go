package sim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/picogate/picogate/device"
)

// Enrollment makes the simulated boards enroll themselves, as hmac devices with key agreement, instead
// of running with credentials from `picogate device add -o json`: each board sends the enrollment
// token, its name and its own hardware id with a fresh ephemeral key, checks the gateway's keyConfirm
// against the pinned gateway key, and then runs with the key it derived (which never crossed the LAN).
type Enrollment struct {
	// Token is the enrollment token (pge_…), from `picogate token create`.
	Token string
	// GatewayKey is the gateway's public key that token create prints, pinned by every board.
	GatewayKey []byte
	// Count is how many boards enroll: Prefix1 … PrefixCount.
	Count int
	// Prefix starts every board's name; default "pico-".
	Prefix string
}

// DefaultEnrollPrefix starts the names of enrolling boards.
const DefaultEnrollPrefix = "pico-"

// credentials checks e and returns the boards' names as credentials without a key yet.
func (e *Enrollment) credentials() ([]Credential, error) {
	var errs []error
	if e.Token == "" || strings.ContainsAny(e.Token, " \t\r\n") {
		errs = append(errs, errors.New("enrollment token: required, without white space"))
	}
	if len(e.GatewayKey) != device.GatewayKeySize {
		errs = append(errs, fmt.Errorf("gateway key: %d bytes, want %d", len(e.GatewayKey), device.GatewayKeySize))
	}
	if e.Count < 1 {
		errs = append(errs, fmt.Errorf("count %d: want at least 1 board to enroll", e.Count))
	}
	setDefault(&e.Prefix, DefaultEnrollPrefix)
	if !validPrefix(e.Prefix) || len(e.Prefix)+len(strconv.Itoa(e.Count)) > 63 {
		errs = append(errs, fmt.Errorf("prefix %q: want lowercase letters, digits, '-' and '.', starting with a letter or digit, leaving room for the number in 63 characters", e.Prefix))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	creds := make([]Credential, e.Count)
	for i := range creds {
		creds[i] = Credential{Name: e.Prefix + strconv.Itoa(i+1), Auth: "hmac"}
	}
	return creds, nil
}

func validPrefix(s string) bool {
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// HardwareID is the hardware id a simulated board enrolls with: 16 uppercase hex digits, like an
// RP2040 flash's unique id, derived from the name so that a board run again is the same board (one that
// lost its flash) and two boards never share one.
func HardwareID(name string) string {
	h := sha256.Sum256([]byte("picosim board " + name))
	return strings.ToUpper(hex.EncodeToString(h[:8]))
}

// enrollingDevice is a board that enrolls first, then runs as a device of the simulator's mode with the
// key it derived.
type enrollingDevice struct {
	cfg  Config
	name string
	req  device.EnrollRequest

	mu       sync.Mutex
	inner    simDevice     // set once enrolled
	took     time.Duration // how long the enrollment took, approval included
	lastErr  string
	errAt    time.Time
	failures map[string]uint64
}

func newEnrolling(cfg Config, c Credential) *enrollingDevice {
	e := cfg.Enrollment
	return &enrollingDevice{
		cfg: cfg, name: c.Name, failures: map[string]uint64{},
		req: device.EnrollRequest{Token: e.Token, Name: c.Name, HardwareID: HardwareID(c.Name), GatewayKey: e.GatewayKey},
	}
}

// Run enrolls (waiting for an operator's approval if the token needs it) and then runs the device until
// ctx ends. Stopping while enrolling is not an error; a refused enrollment is.
func (d *enrollingDevice) Run(ctx context.Context) error {
	start := time.Now()
	tr := &http.Transport{DialContext: dialer(netip.Addr{}, 10*time.Second), TLSClientConfig: deviceTLS(d.cfg.TLS, ""), MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	client, err := device.NewClient(device.ClientConfig{Gateway: d.cfg.Gateway, HTTPClient: &http.Client{Transport: tr}, Logger: d.cfg.Logger.With("device", d.name)})
	if err != nil {
		return fmt.Errorf("device %q: %w", d.name, err)
	}
	cred, err := client.Enroll(ctx, d.req)
	if err != nil {
		d.fail(err)
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("device %q: %w", d.name, err)
	}
	inner, err := newSimDevice(d.cfg, Credential{Name: cred.Name, Auth: "hmac", Key: hex.EncodeToString(cred.Key)})
	clear(cred.Key)
	if err != nil {
		d.fail(err)
		return err
	}
	d.mu.Lock()
	d.inner, d.took = inner, time.Since(start)
	d.mu.Unlock()
	d.cfg.Logger.Info("enrolled with key agreement", "device", d.name, "took", d.took)
	return inner.Run(ctx)
}

func (d *enrollingDevice) fail(err error) {
	kind := "enroll"
	var ae *device.APIError
	if errors.As(err, &ae) {
		kind = "enroll-http-" + strconv.Itoa(ae.Code)
	} else if errors.Is(err, device.ErrKeyNotConfirmed) {
		kind = "enroll-key-not-confirmed"
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failures[kind]++
	d.lastErr, d.errAt = err.Error(), time.Now()
}

func (d *enrollingDevice) Snapshot() DeviceReport {
	d.mu.Lock()
	inner, took := d.inner, d.took
	r := DeviceReport{Name: d.name, LastError: d.lastErr, LastErrorAt: d.errAt}
	if len(d.failures) > 0 {
		r.Errors = make(map[string]uint64, len(d.failures))
		for k, v := range d.failures {
			r.Errors[k] = v
		}
	}
	d.mu.Unlock()
	if inner == nil {
		return r
	}
	r = inner.Snapshot()
	r.EnrollSeconds = took.Seconds()
	return r
}
