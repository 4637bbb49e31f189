// Package upstream connects picogate to the Kubernetes API server: it finds the kubeconfig the way a k3s
// user expects, and builds the TLS transport with client-go, so client certificates, bearer-token files
// and exec plugins behave exactly as they do for kubectl. A rotated client-certificate file is picked up
// without a restart and without failing a request in flight (k3s rotates its certificates; nginx keeps
// the old one until reloaded): see rotatingTransport.
package upstream

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// K3sKubeconfig is where k3s writes its admin kubeconfig; picogate uses it when nothing else is given.
const K3sKubeconfig = "/etc/rancher/k3s/k3s.yaml"

// Config says how to reach the API server. The zero value finds a kubeconfig as described on Kubeconfig.
type Config struct {
	// Kubeconfig is a kubeconfig path. Empty means $KUBECONFIG, else /etc/rancher/k3s/k3s.yaml if it is
	// readable, else the in-cluster service-account configuration.
	Kubeconfig string
	// Context selects a kubeconfig context; empty means the current one.
	Context string
	// HTTP2 carries watches over HTTP/2 (client-go's default): every watch shares a few multiplexed
	// connections instead of holding a TLS connection of its own. Other device requests still go over
	// a pool of kept-alive HTTP/1.1 connections (Upstream.Transport), which costs the gateway less CPU
	// per request than HTTP/2's framing, flow control and stream goroutines (see docs/benchmarks.md).
	// false uses the HTTP/1.1 pool for everything, watches too.
	HTTP2 bool
	// MaxIdleConns is the HTTP/1.1 idle pool size. Default 128; picogate serve sets it to
	// --max-inflight, so a burst's connections are kept rather than handshaked again.
	MaxIdleConns int
	// CertReloadInterval is how often the client-certificate and key files named in the kubeconfig are
	// read again. Default 10s.
	CertReloadInterval time.Duration
	// DialTimeout bounds connecting to the API server. Default 5s.
	DialTimeout time.Duration
	// Logger receives certificate rotation messages. Default: discard.
	Logger *slog.Logger
}

// Upstream is a connection to one API server.
type Upstream struct {
	// URL is the API server's base URL (a path prefix, as in Rancher-style URLs, is kept).
	URL *url.URL
	// Transport carries forwarded device requests, authenticated as the gateway's own identity, over a
	// pool of HTTP/1.1 connections.
	Transport http.RoundTripper
	// WatchTransport carries forwarded watches the same way: over HTTP/2 when Config.HTTP2 is set, else
	// it is Transport.
	WatchTransport http.RoundTripper
	// REST is the client-go configuration the transport was built from (for the gateway's own clients).
	REST *rest.Config
	// Client is a typed client with the gateway's identity (registry, readiness checks).
	Client kubernetes.Interface
	// Source says where the configuration came from, for the start-up log line.
	Source string
}

// New loads the configuration and builds the transport. It does not contact the API server.
func New(cfg Config) (*Upstream, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	rc, source, err := LoadREST(cfg.Kubeconfig, cfg.Context)
	if err != nil {
		return nil, err
	}
	return FromREST(rc, source, cfg)
}

// withDefaults fills in the documented defaults and reports every invalid setting at once.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.MaxIdleConns == 0 {
		cfg.MaxIdleConns = 128
	}
	if cfg.CertReloadInterval == 0 {
		cfg.CertReloadInterval = 10 * time.Second
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if cfg.MaxIdleConns < 0 {
		errs = append(errs, errors.New("max idle connections must not be negative"))
	}
	if cfg.CertReloadInterval < time.Second {
		errs = append(errs, errors.New("certificate reload interval must be at least 1s"))
	}
	return cfg, errors.Join(errs...)
}

// FromREST builds an Upstream from an existing client-go configuration.
func FromREST(rc *rest.Config, source string, cfg Config) (*Upstream, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	rc = rest.CopyConfig(rc)
	rc.QPS, rc.Burst = 50, 100
	u, perr := url.Parse(rc.Host)
	if perr != nil || u.Host == "" {
		return nil, fmt.Errorf("kubeconfig (%s): server %q is not a URL", source, rc.Host)
	}
	if u.Scheme == "" {
		u.Scheme = "https"
	}
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	rotations := newRotationLog(cfg.Logger) // one for both transports: they follow the same files
	h1, rt, err := transportFor(http1Only(rc), source, cfg, d, rotations)
	if err != nil {
		return nil, err
	}
	watchRT := rt
	if cfg.HTTP2 {
		if rc, watchRT, err = transportFor(rc, source, cfg, d, rotations); err != nil {
			return nil, err
		}
	} else {
		rc = h1
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("building API client from %s: %w", source, err)
	}
	return &Upstream{URL: u, Transport: rt, WatchTransport: watchRT, REST: rc, Client: cs, Source: source}, nil
}

// http1Only is rc offering only HTTP/1.1 in TLS.
func http1Only(rc *rest.Config) *rest.Config {
	rc = rest.CopyConfig(rc)
	rc.NextProtos = []string{"http/1.1"}
	return rc
}

// transportFor builds the transport of rc (HTTP/2 unless rc.NextProtos rules it out), with the pool and
// dialer tuned and a client certificate from files followed through rotations. It returns the
// configuration the transport was built from, for clients that should share its settings.
func transportFor(rc *rest.Config, source string, cfg Config, d *net.Dialer, rotations *rotationLog) (*rest.Config, http.RoundTripper, error) {
	rc = rest.CopyConfig(rc)
	if certFromFiles(rc) {
		var err error
		if rc, err = withRotatingCert(rc, source, cfg, d, rotations); err != nil {
			return nil, nil, err
		}
	} else {
		rc.Dial = d.DialContext
		rc.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
			if t, ok := rt.(*http.Transport); ok {
				tune(t, cfg)
			}
			return rt
		}
	}
	rt, err := rest.TransportFor(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("building API server transport from %s: %w", source, err)
	}
	return rc, rt, nil
}

// tune sizes the HTTP/1.1 pool and leaves response headers unbounded: watches answer late by design, and
// non-watch requests are bounded by the gateway.
func tune(t *http.Transport, cfg Config) {
	t.MaxIdleConns = cfg.MaxIdleConns
	t.MaxIdleConnsPerHost = cfg.MaxIdleConns
	t.IdleConnTimeout = 90 * time.Second
	t.ResponseHeaderTimeout = 0
}

// certFromFiles reports whether the client certificate and key are files (which can be rotated), not
// data inlined in the kubeconfig.
func certFromFiles(rc *rest.Config) bool {
	return rc.CertFile != "" && rc.KeyFile != "" && len(rc.CertData) == 0 && len(rc.KeyData) == 0
}

// withRotatingCert returns a copy of rc whose TLS is carried by a rotatingTransport over the certificate
// files, so the typed client and the forwarding transport both follow a rotation. Everything else of rc
// (bearer tokens, impersonation, user agent) still applies on top.
func withRotatingCert(rc *rest.Config, source string, cfg Config, d *net.Dialer, rotations *rotationLog) (*rest.Config, error) {
	base := rest.CopyConfig(rc)
	base.CertFile, base.KeyFile = "", ""
	build := func(cert, key []byte) (*http.Transport, error) {
		c := rest.CopyConfig(base)
		c.CertData, c.KeyData = cert, key
		tlsCfg, err := rest.TLSConfigFor(c)
		if err != nil {
			return nil, fmt.Errorf("TLS configuration from %s: %w", source, err)
		}
		t := &http.Transport{TLSClientConfig: tlsCfg, DialContext: d.DialContext, Proxy: c.Proxy, DisableCompression: c.DisableCompression}
		tune(t, cfg)
		return utilnet.SetTransportDefaults(t), nil
	}
	rot, err := newRotatingTransport(rc.CertFile, rc.KeyFile, cfg.CertReloadInterval, rotations, build)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig (%s): %w", source, err)
	}
	out := rest.CopyConfig(rc)
	out.TLSClientConfig = rest.TLSClientConfig{}
	out.Proxy = nil // both are the rotating transport's now
	out.Transport = rot
	return out, nil
}

// LoadREST finds and loads the client configuration: explicit path, $KUBECONFIG, the k3s kubeconfig, or
// in-cluster, in that order. The returned source names which one was used.
func LoadREST(path, context string) (*rest.Config, string, error) {
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	if path == "" {
		if f, err := os.Open(K3sKubeconfig); err == nil {
			_ = f.Close()
			path = K3sKubeconfig
		}
	}
	if path == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, "", fmt.Errorf("no kubeconfig: --kubeconfig and $KUBECONFIG are unset, %s is not readable, and not in a cluster (%v)", K3sKubeconfig, err)
		}
		return rc, "in-cluster service account", nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, "", fmt.Errorf("reading kubeconfig: %w", err)
	}
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: path}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("loading kubeconfig %s: %w", path, err)
	}
	return rc, path, nil
}
