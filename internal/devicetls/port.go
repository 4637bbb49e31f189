// Package devicetls is the TLS device port (`picogate serve --tls-listen`): TLS that a board running
// mbedtls on a Cortex-M0+ can complete, in front of the same gateway handler as the plain port.
//
// What it settles, and why:
//   - the certificate is ECDSA P-256, a leaf signed directly by a CA the firmware pins (NewCA,
//     IssueLeaf; `picogate setup --tls` writes them), read from files and read again when they change,
//     so a leaf is rotated without a restart and without touching the boards;
//   - TLS 1.2 and 1.3; for TLS 1.2 only ECDHE-ECDSA with AES-128-GCM or ChaCha20-Poly1305, the suites
//     mbedtls does well without AES hardware; key exchange over X25519 or P-256 only;
//   - session tickets, so a board pays the public-key work once and then resumes: every request of the
//     reference firmware is a new connection. Replicas share ticket keys only when given a seed file
//     (Config.TicketKeyFile), because keys derived from a long-lived secret trade forward secrecy of
//     recorded sessions for resumption across replicas;
//   - application data records carry at most Config.MaxRecordBytes, because Go's crypto/tls negotiates
//     neither max_fragment_length nor record_size_limit and a board sizes its input buffer
//     (MBEDTLS_SSL_IN_CONTENT_LEN) at build time;
//   - the source allowlist is checked on the TCP connection before any TLS, and handshakes are
//     bounded in number and in time, since each costs the gateway public-key work.
//
// docs/tls.md has the measurements behind these choices and what a firmware must configure.
package devicetls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config.
const (
	DefaultCertFile         = "/etc/picogate/tls/tls.crt"
	DefaultKeyFile          = "/etc/picogate/tls/tls.key"
	DefaultMaxHandshakes    = 256
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxRecordBytes   = 2048
	DefaultReloadInterval   = 10 * time.Second
	// MinRecordBytes and MaxRecordBytes bound Config.MaxRecordBytes: below 512 bytes no useful
	// response fits a few records, and TLS records never carry more than 16 KiB.
	MinRecordBytes = 512
	MaxRecordBytes = 16384
)

// Config configures the TLS device port. Zero values take the documented defaults.
type Config struct {
	// Listen is the TLS device port's address, e.g. ":6084". Empty means no TLS port; the rest of
	// Config is then not used.
	Listen string
	// CertFile and KeyFile hold the port's certificate (the leaf, optionally followed by more of the
	// chain, PEM) and its ECDSA P-256 key. Default DefaultCertFile and DefaultKeyFile, where
	// `picogate setup --tls` writes them. Both are read again when either changes.
	CertFile, KeyFile string
	// TicketKeyFile, when set, holds at least 32 random bytes from which every replica derives the
	// same session ticket keys, one per day, so a board resumes its session on any replica. Empty: each
	// replica has its own random keys (Go's, rotated daily and never written anywhere).
	TicketKeyFile string
	// MaxHandshakes caps the handshakes in progress; beyond it the port stops accepting until one
	// ends (new connections wait in the kernel's backlog). Default 256.
	MaxHandshakes int
	// HandshakeTimeout bounds one handshake, from accept to the client's Finished. Default 10s: a
	// board's full handshake is about 2 s of its own computing.
	HandshakeTimeout time.Duration
	// MaxRecordBytes caps the application data in one TLS record sent to a device, so a board can size
	// its receive buffer (MBEDTLS_SSL_IN_CONTENT_LEN) to it. Default 2048; 512 to 16384.
	MaxRecordBytes int
	// ReloadInterval is how often Run checks the certificate files and the ticket key file. Default 10s.
	ReloadInterval time.Duration
	// Allowed is the source allowlist (the gateway's --allow-cidr), checked on the TCP connection
	// before the handshake. Required.
	Allowed func(netip.Addr) bool
	// Registerer receives the port's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives the port's logs. Default none.
	Logger *slog.Logger
	// Now is the clock of the ticket keys' days. Default time.Now.
	Now func() time.Time
}

// Port is the TLS device port's settings and state: its certificate, its ticket keys and the bound
// on handshakes. Listener turns a TCP listener into one that yields finished TLS connections.
type Port struct {
	cfg     Config
	log     *slog.Logger
	certs   *certSource
	tls     *tls.Config
	metrics *metrics
	slots   chan struct{} // one per handshake in progress

	ticketMu    sync.Mutex
	ticketSeed  []byte
	ticketEpoch int64
}

// New validates cfg, reporting every problem at once, and loads the certificate (and the ticket key
// file): a port that cannot serve fails here, before anything is accepted.
func New(cfg Config) (*Port, error) {
	if cfg.CertFile == "" {
		cfg.CertFile = DefaultCertFile
	}
	if cfg.KeyFile == "" {
		cfg.KeyFile = DefaultKeyFile
	}
	setDefault(&cfg.MaxHandshakes, DefaultMaxHandshakes)
	setDefault(&cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefault(&cfg.MaxRecordBytes, DefaultMaxRecordBytes)
	setDefault(&cfg.ReloadInterval, DefaultReloadInterval)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var errs []error
	if cfg.MaxHandshakes < 0 {
		errs = append(errs, fmt.Errorf("--tls-max-handshakes %d: want a positive number", cfg.MaxHandshakes))
	}
	if cfg.HandshakeTimeout < 0 {
		errs = append(errs, fmt.Errorf("--tls-handshake-timeout %s: want a positive duration", cfg.HandshakeTimeout))
	}
	if cfg.MaxRecordBytes < MinRecordBytes || cfg.MaxRecordBytes > MaxRecordBytes {
		errs = append(errs, fmt.Errorf("--tls-record-bytes %d: want %d to %d", cfg.MaxRecordBytes, MinRecordBytes, MaxRecordBytes))
	}
	if cfg.ReloadInterval < 0 {
		errs = append(errs, fmt.Errorf("reload interval %s: want a positive duration", cfg.ReloadInterval))
	}
	if cfg.Allowed == nil {
		errs = append(errs, errors.New("no source allowlist"))
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		errs = append(errs, err)
	}
	p := &Port{cfg: cfg, log: cfg.Logger, metrics: m}
	if m != nil {
		p.certs = &certSource{certFile: cfg.CertFile, keyFile: cfg.KeyFile, log: cfg.Logger, metrics: m}
		if err := p.certs.load(); err != nil {
			errs = append(errs, fmt.Errorf("TLS device port: %w", err))
		}
	}
	p.tls = serverConfig(p.certs)
	if cfg.TicketKeyFile != "" {
		if err := p.rotateTickets(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if max := cfg.MaxHandshakes; max > 0 {
		p.slots = make(chan struct{}, max)
	}
	return p, nil
}

// serverConfig is the port's TLS configuration: what an mbedtls board on a Cortex-M0+ can do well,
// and nothing it cannot, so no client is talked into anything weaker.
func serverConfig(certs *certSource) *tls.Config {
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		MaxVersion: tls.VersionTLS13,
		// TLS 1.2 only (TLS 1.3's suites are not configurable in Go and all three are fine): ECDHE with
		// the ECDSA certificate, and AEAD ciphers. A board without AES hardware lists ChaCha20-Poly1305
		// first and Go then picks it; Go itself prefers AES-GCM where it has AES hardware.
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		// X25519 is the cheapest key exchange on a small core; P-256 for boards whose mbedtls lacks
		// Curve25519. No hybrid post-quantum share: its 1.2 KB key would not fit a board's budget.
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
		// HTTP/1.1 only: boards speak nothing else, and the gateway's handler is written for it.
		NextProtos: []string{"http/1.1"},
	}
	if certs != nil {
		c.GetCertificate = certs.get
	}
	return c
}

// TLSConfig is the port's server configuration (for tests and benchmarks that speak TLS to it
// directly). It must not be modified.
func (p *Port) TLSConfig() *tls.Config { return p.tls }

// Run keeps the port current until ctx ends: every ReloadInterval it loads the certificate again if
// its files changed, and rolls the shared session ticket keys over at each day's boundary.
func (p *Port) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_ = p.Reload()
		}
	}
}

// Reload loads the certificate again if its files changed (a failure keeps the current one) and
// brings the shared ticket keys to the current day and seed. It returns what went wrong, if anything.
func (p *Port) Reload() error {
	_, err := p.certs.reload()
	if p.cfg.TicketKeyFile != "" {
		if terr := p.rotateTickets(); terr != nil {
			p.log.Warn("session ticket keys not rotated: keeping the current ones", "err", terr)
			err = errors.Join(err, terr)
		}
	}
	return err
}

// rotateTickets reads the seed and installs the day's keys if the day or the seed changed.
func (p *Port) rotateTickets() error {
	seed, err := readTicketSeed(p.cfg.TicketKeyFile)
	if err != nil {
		return err
	}
	keys, epoch, err := ticketKeys(seed, p.cfg.Now())
	if err != nil {
		return err
	}
	p.ticketMu.Lock()
	defer p.ticketMu.Unlock()
	if epoch == p.ticketEpoch && string(seed) == string(p.ticketSeed) {
		return nil
	}
	p.tls.SetSessionTicketKeys(keys)
	p.ticketSeed, p.ticketEpoch = seed, epoch
	return nil
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}
