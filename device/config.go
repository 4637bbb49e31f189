package device

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults applied by New for zero-valued Config fields. They are what a
// kubelet uses where one applies (lease 10 s / 40 s) and what a board on a
// congested Wi-Fi network can sustain otherwise.
const (
	DefaultBoard                = "rp2040"
	DefaultInstanceType         = "rp2040-pico"
	DefaultCPU                  = "1"
	DefaultMemory               = "264Ki"
	DefaultPods                 = 4
	DefaultLeaseInterval        = 10 * time.Second
	DefaultLeaseDuration        = 40 * time.Second
	DefaultStatusCheckInterval  = 10 * time.Second
	DefaultStatusReportInterval = 5 * time.Minute
	DefaultJitter               = 0.1
	DefaultBackoffMin           = 500 * time.Millisecond
	DefaultBackoffMax           = 30 * time.Second
	DefaultRequestTimeout       = 10 * time.Second
	DefaultWatchTimeout         = 5 * time.Minute
	DefaultMaxResponseBytes     = 64 << 10
	DefaultVersion              = "v0.1.0-picogate"
)

// Config describes one device. The zero value of every field but Name and
// Gateway works; New fills in the defaults above.
type Config struct {
	// Name is the device's node name, as provisioned with
	// `picogate device add NAME`. Required; a lowercase RFC 1123 name.
	Name string
	// Gateway is the gateway's base URL, e.g. "http://192.168.1.10:6080".
	// Required. Kubernetes API paths are appended to it.
	Gateway string

	// Token is the device's bearer token (token mode). Leave it empty in ip
	// mode, where the gateway recognises the device by its source address.
	Token string
	// Signer, when set, authenticates each request instead of Token (for
	// request signing). At most one of Token, Signer and Key may be set.
	Signer Signer
	// Key is the device's 32-byte key in hmac mode: the agent then signs
	// every request with an HMACSigner on its own clock (set ServerClock on
	// a board without a real-time clock: the gateway refuses a timestamp
	// more than 30 s off).
	Key []byte

	// Board is the value of the picogate.io/board label; default "rp2040".
	Board string
	// InstanceType is the node.kubernetes.io/instance-type label; default
	// "rp2040-pico".
	InstanceType string
	// Capacity is what the node advertises to the scheduler; it should be
	// honest, since the scheduler believes it.
	Capacity Capacity
	// InternalIP is the address reported as the node's InternalIP and as the
	// pods' hostIP/podIP. When empty and the agent builds its own HTTP client,
	// the local address of its first connection to the gateway is used.
	InternalIP string
	// Version is reported as nodeInfo.kubeletVersion; default
	// "v0.1.0-picogate".
	Version string

	// Apps maps container images to the applications built into the
	// firmware. A pod whose container image is not here waits with reason
	// ImageNotBuiltIn. See BuiltinApps for two examples.
	Apps map[string]App
	// Health, when set, is asked before each status check; an error makes
	// the node Ready=False with the error's text as the message.
	Health func() error

	// HTTPClient sends the requests; by default one is built from Dial with
	// keep-alive connections. Its Timeout must be zero: watches are long.
	HTTPClient *http.Client
	// Dial opens connections for the default HTTP client; by default a
	// net.Dialer. A simulator binds the source address here.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS configures the default HTTP client for an https:// Gateway (the
	// gateway's TLS port): PinnedTLS trusts only the fleet's CA and resumes
	// sessions. Nil uses the system's roots.
	TLS *tls.Config
	// Logger receives the agent's log; by default nothing is logged.
	Logger *slog.Logger
	// Now is the clock; by default time.Now. A board without a real-time
	// clock should set ServerClock instead of guessing.
	Now func() time.Time
	// ServerClock sets the agent's clock from the Date header of the
	// gateway's responses, for boards without a real-time clock.
	ServerClock bool

	// Timings. Zero means the default.
	LeaseInterval        time.Duration // lease renewal period (10 s)
	LeaseDuration        time.Duration // leaseDurationSeconds (40 s)
	StatusCheckInterval  time.Duration // how often health and addresses are checked (10 s)
	StatusReportInterval time.Duration // longest gap between status patches (5 min, the kubelet's nodeStatusReportFrequency)
	// Jitter is the fraction by which periods are shortened at random, to
	// spread a fleet's requests (0.1). Negative disables jitter.
	Jitter         float64
	BackoffMin     time.Duration // first retry delay after a failure (0.5 s)
	BackoffMax     time.Duration // cap of the exponential backoff (30 s)
	RequestTimeout time.Duration // per non-watch request (10 s)
	WatchTimeout   time.Duration // timeoutSeconds of each pod watch (5 min)
	// MaxResponseBytes bounds a response body or one watch event (64 KiB).
	MaxResponseBytes int
}

// Capacity is the node's advertised resources, as Kubernetes quantities.
type Capacity struct {
	CPU    string // default "1"
	Memory string // default "264Ki": the RP2040's SRAM
	Pods   int    // default 4
}

// Signer adds authentication to a request just before it is sent. body is
// the exact request body (nil for none); Sign must not consume req.Body.
type Signer interface {
	Sign(req *http.Request, body []byte) error
}

// SignerFunc adapts a function to Signer.
type SignerFunc func(req *http.Request, body []byte) error

// Sign calls f.
func (f SignerFunc) Sign(req *http.Request, body []byte) error { return f(req, body) }

// withDefaults returns a copy of c with defaults filled in and every problem
// found, joined.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if err := validName(c.Name); err != nil {
		errs = append(errs, fmt.Errorf("name: %w", err))
	}
	if c.Gateway == "" {
		errs = append(errs, errors.New("gateway: required"))
	} else if u, err := url.Parse(c.Gateway); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("gateway %q: want an http:// or https:// base URL", c.Gateway))
	} else {
		c.Gateway = strings.TrimRight(c.Gateway, "/")
	}
	if n := btoi(c.Token != "") + btoi(c.Signer != nil) + btoi(c.Key != nil); n > 1 {
		errs = append(errs, errors.New("auth: Token, Signer and Key exclude each other: set one, not both"))
	}
	if c.Key != nil && len(c.Key) != KeySize {
		errs = append(errs, fmt.Errorf("key: %d bytes, want %d", len(c.Key), KeySize))
	}
	if strings.ContainsAny(c.Token, " \t\r\n") {
		errs = append(errs, errors.New("token: contains white space"))
	}
	if c.HTTPClient != nil && c.HTTPClient.Timeout != 0 {
		errs = append(errs, errors.New("http client: Timeout must be zero (watches are long-lived; the agent sets per-request deadlines)"))
	}
	if c.HTTPClient != nil && c.Dial != nil {
		errs = append(errs, errors.New("dial: only used without HTTPClient"))
	}
	if err := checkTLS(c.Gateway, c.TLS, c.HTTPClient != nil); err != nil {
		errs = append(errs, err)
	}
	if c.InternalIP != "" && net.ParseIP(c.InternalIP) == nil {
		errs = append(errs, fmt.Errorf("internal ip %q: not an IP address", c.InternalIP))
	}
	setDefault(&c.Board, DefaultBoard)
	setDefault(&c.InstanceType, DefaultInstanceType)
	setDefault(&c.Version, DefaultVersion)
	setDefault(&c.Capacity.CPU, DefaultCPU)
	setDefault(&c.Capacity.Memory, DefaultMemory)
	if c.Capacity.Pods == 0 {
		c.Capacity.Pods = DefaultPods
	}
	for _, lv := range []struct{ field, v string }{{"board", c.Board}, {"instance type", c.InstanceType}} {
		if err := validLabelValue(lv.v); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", lv.field, lv.v, err))
		}
	}
	for _, q := range []struct{ field, v string }{{"capacity cpu", c.Capacity.CPU}, {"capacity memory", c.Capacity.Memory}} {
		if !validQuantity(q.v) {
			errs = append(errs, fmt.Errorf("%s %q: not a Kubernetes quantity", q.field, q.v))
		}
	}
	if c.Capacity.Pods < 0 {
		errs = append(errs, fmt.Errorf("capacity pods %d: negative", c.Capacity.Pods))
	}
	for image, app := range c.Apps {
		if image == "" || app == nil {
			errs = append(errs, fmt.Errorf("apps: image %q: empty image or nil app", image))
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(discardHandler{})
	}
	durations := []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"lease interval", &c.LeaseInterval, DefaultLeaseInterval},
		{"lease duration", &c.LeaseDuration, DefaultLeaseDuration},
		{"status check interval", &c.StatusCheckInterval, DefaultStatusCheckInterval},
		{"status report interval", &c.StatusReportInterval, DefaultStatusReportInterval},
		{"backoff min", &c.BackoffMin, DefaultBackoffMin},
		{"backoff max", &c.BackoffMax, DefaultBackoffMax},
		{"request timeout", &c.RequestTimeout, DefaultRequestTimeout},
		{"watch timeout", &c.WatchTimeout, DefaultWatchTimeout},
	}
	for _, d := range durations {
		if *d.d < 0 {
			errs = append(errs, fmt.Errorf("%s %s: negative", d.name, *d.d))
		}
		if *d.d == 0 {
			*d.d = d.def
		}
	}
	if c.LeaseDuration < time.Second || c.LeaseDuration%time.Second != 0 {
		errs = append(errs, fmt.Errorf("lease duration %s: want whole seconds", c.LeaseDuration))
	}
	if c.LeaseInterval >= c.LeaseDuration {
		errs = append(errs, fmt.Errorf("lease interval %s: must be shorter than lease duration %s", c.LeaseInterval, c.LeaseDuration))
	}
	if c.BackoffMin > c.BackoffMax {
		errs = append(errs, fmt.Errorf("backoff min %s: above backoff max %s", c.BackoffMin, c.BackoffMax))
	}
	if c.WatchTimeout < time.Second {
		errs = append(errs, fmt.Errorf("watch timeout %s: want at least 1s", c.WatchTimeout))
	}
	switch {
	case c.Jitter == 0:
		c.Jitter = DefaultJitter
	case c.Jitter < 0:
		c.Jitter = 0
	case c.Jitter >= 1:
		errs = append(errs, fmt.Errorf("jitter %v: want a fraction below 1", c.Jitter))
	}
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = DefaultMaxResponseBytes
	} else if c.MaxResponseBytes < 4096 {
		errs = append(errs, fmt.Errorf("max response bytes %d: want at least 4096", c.MaxResponseBytes))
	}
	return c, errors.Join(errs...)
}

func setDefault(s *string, def string) {
	if *s == "" {
		*s = def
	}
}

func validLabelValue(s string) error {
	if len(s) > 63 {
		return errors.New("longer than 63 characters")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		if !alnum && (c != '-' && c != '_' && c != '.' || i == 0 || i == len(s)-1) {
			return errors.New("not a label value")
		}
	}
	return nil
}

// validQuantity accepts the plain forms a board would advertise: digits with
// an optional decimal part and an optional binary or decimal suffix.
func validQuantity(s string) bool {
	num := strings.TrimRight(s, "KMGTPEikmnu")
	suffix := s[len(num):]
	switch suffix {
	case "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E":
	default:
		return false
	}
	if num == "" {
		return false
	}
	dot := false
	for i := 0; i < len(num); i++ {
		switch c := num[i]; {
		case c >= '0' && c <= '9':
		case c == '.' && !dot && i > 0 && i < len(num)-1:
			dot = true
		default:
			return false
		}
	}
	return true
}

// discardHandler is a slog.Handler that drops everything (slog.DiscardHandler
// needs Go 1.24; TinyGo may lag behind).
type discardHandler struct{}

func (discardHandler) Enabled(context.Context, slog.Level) bool  { return false }
func (discardHandler) Handle(context.Context, slog.Record) error { return nil }
func (d discardHandler) WithAttrs([]slog.Attr) slog.Handler      { return d }
func (d discardHandler) WithGroup(string) slog.Handler           { return d }

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
