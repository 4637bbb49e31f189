package cli

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/picogate/picogate/internal/devicetls"
	"github.com/picogate/picogate/internal/gateway"
	"github.com/picogate/picogate/internal/podcidr"
	"github.com/picogate/picogate/internal/serve"
)

func newServe(g *globals) *cobra.Command {
	var cfg serve.Config
	var allow []string
	var devicePodCIDR, clusterCIDR string
	var nodeMask int
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve devices: plain HTTP on the LAN, forwarded to the Kubernetes API over TLS",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("allow-cidr") {
				if cfg.Gateway.AllowCIDRs, err = serve.ParseCIDRs(allow); err != nil {
					return usageError{err}
				}
			}
			if err := tlsFlagsNeedListen(cmd, cfg.TLS.Listen); err != nil {
				return usageError{err}
			}
			if cfg.PodCIDR, err = podcidr.ParseSettings(devicePodCIDR, clusterCIDR, nodeMask); err != nil {
				return usageError{err}
			}
			cfg.Logger = log
			cfg.Fleet.PodWatch.MaxTimeout = cfg.Gateway.MaxWatchTimeout
			// The shared pod watch holds pods compacted: without compaction a device gets them whole, relayed.
			cfg.Fleet.SharedPodWatch = cfg.Fleet.SharedPodWatch && cfg.Gateway.Compact
			if cfg.Gateway.AccessLog && log.Enabled(cmd.Context(), slog.LevelInfo) {
				// The gateway writes its access log itself, in the same format, at a fraction of slog's cost.
				cfg.Gateway.AccessLogWriter, cfg.Gateway.AccessLogJSON = g.logWriter(), g.logFormat == "json"
			}
			cfg.Upstream.Kubeconfig, cfg.Upstream.Context, cfg.Namespace = g.kubeconfig, g.context, g.namespace
			return serve.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", ":6080", "device port (plain HTTP)")
	f.StringVar(&cfg.TLS.Listen, "tls-listen", "", "TLS device port, e.g. :6084: the same device API over TLS 1.2/1.3 for boards that pin the CA (off by default; docs/tls.md)")
	f.StringVar(&cfg.TLS.CertFile, "tls-cert", devicetls.DefaultCertFile, "the TLS port's certificate (PEM, ECDSA P-256, as picogate setup --tls writes it); re-read when it changes")
	f.StringVar(&cfg.TLS.KeyFile, "tls-key", devicetls.DefaultKeyFile, "the TLS port's private key (PEM); re-read when it changes")
	f.StringVar(&cfg.TLS.TicketKeyFile, "tls-ticket-key-file", "", "a secret of 32+ random bytes from which every replica derives the same session ticket keys, so boards resume on any replica (default: each replica its own keys; docs/tls.md has the trade-off)")
	f.IntVar(&cfg.TLS.MaxHandshakes, "tls-max-handshakes", devicetls.DefaultMaxHandshakes, "TLS handshakes in progress at once; beyond it new connections wait to be accepted")
	f.DurationVar(&cfg.TLS.HandshakeTimeout, "tls-handshake-timeout", devicetls.DefaultHandshakeTimeout, "time a client has to complete the TLS handshake")
	f.IntVar(&cfg.TLS.MaxRecordBytes, "tls-record-bytes", devicetls.DefaultMaxRecordBytes, "most application data in one TLS record sent to a device: a board's MBEDTLS_SSL_IN_CONTENT_LEN must be at least this (512 to 16384)")
	f.StringVar(&cfg.AdminListen, "admin-listen", "127.0.0.1:6081", "admin port: /healthz, /readyz, /metrics")
	f.BoolVar(&cfg.Gateway.SharedIdentity, "shared-identity", false, "forward devices without a credential as the restricted identity picogate:shared, limited per source address (nginx-compatible)")
	f.StringSliceVar(&allow, "allow-cidr", nil, "source networks allowed to connect, repeatable (default loopback, RFC 1918, IPv6 ULA and link-local)")
	f.BoolVar(&cfg.Enrollment, "enrollment", false, "serve POST /picogate/v1/enroll, /rotate and /deregister (the gateway then writes device records; see deploy/rbac-enrollment.yaml)")
	f.BoolVar(&cfg.Gateway.RequireHMAC, "require-hmac", false, "refuse every device request that is not signed (hmac mode): bearer tokens and ip-mode devices get 401")
	f.StringVar(&cfg.PolicyFile, "policy", "", "device policy file replacing the default allowlist (see docs/policy.md)")
	f.BoolVar(&cfg.Gateway.Compact, "compact", true, "MCU-sized responses: drop managedFields, send Content-Length, never chunked")
	f.IntVar(&cfg.Gateway.MaxCompactBytes, "compact-max-bytes", 256<<10, "largest response buffered for compaction; larger ones pass through untouched")
	f.IntVar(&cfg.Gateway.RingBytes, "ring-bytes", gateway.DefaultRingBytes, "what a ring-limited device keeps of an answer, headers included (the reference firmware's 2,048-byte receive ring); larger answers are counted in picogate_responses_over_ring_total")
	f.StringSliceVar(&cfg.Gateway.RingUserAgents, "ring-user-agents", []string{gateway.DefaultRingUserAgent}, "User-Agent prefixes of ring-limited devices, whose answers are fitted into --ring-bytes: a write's answer summarized, a read too big refused with 406, never cut")
	f.Int64Var(&cfg.Gateway.MaxBodyBytes, "max-body-bytes", 64<<10, "largest request body accepted (413 beyond)")
	f.Int64Var(&cfg.Gateway.UnverifiedBodyBudget, "max-unverified-body-bytes", 4<<20, "request bodies held at once from senders not yet authenticated (signed requests before their signature is checked, shared identity, enrollment): 503 beyond; each counts at least 16 KiB")
	f.IntVar(&cfg.GCPercent, "gc-percent", 400, "Go GC target percentage (GOGC); the GOGC environment variable wins")
	f.Int64Var(&cfg.MemoryLimit, "memory-limit", 192<<20, "soft memory limit in bytes (GOMEMLIMIT): the heap grows to it before the collector runs, so it sets the gateway's RSS; the GOMEMLIMIT environment variable wins")
	f.BoolVar(&cfg.Profiling, "profiling", false, "serve net/http/pprof under /debug/pprof/ on the admin port")
	f.BoolVar(&cfg.Fleet.HeartbeatTranslation, "heartbeat-translation", true, "turn status-PATCH heartbeats into Lease renewals; write the Node status only on change, every report interval, or when it may be Unknown (docs/heartbeat.md)")
	f.DurationVar(&cfg.Fleet.Heartbeat.GracePeriod, "node-monitor-grace-period", 50*time.Second, "kube-controller-manager's --node-monitor-grace-period; the Lease renew interval (grace/4) and the staleness bound follow from it")
	f.DurationVar(&cfg.Fleet.Heartbeat.RenewInterval, "lease-renew-interval", 0, "renew a device's Lease at most this often, 1s to grace/2 (default grace/4)")
	f.DurationVar(&cfg.Fleet.Heartbeat.ReportInterval, "node-status-report-interval", 5*time.Minute, "write an unchanged Node status at least this often")
	f.BoolVar(&cfg.Fleet.Heartbeat.CoalesceLeases, "coalesce-leases", true, "forward a device's renewal of its own Lease only when the last forwarded one is a renew interval old, answering the others (needs --heartbeat-translation)")
	f.BoolVar(&cfg.Fleet.ReadCache, "read-cache", true, "answer devices' repeated GETs (ConfigMaps, their own Node and Lease) from memory, with ETag and If-None-Match")
	f.DurationVar(&cfg.Fleet.Reads.MaxStaleness, "read-cache-max-staleness", 10*time.Second, "oldest object served from memory")
	f.DurationVar(&cfg.Fleet.Reads.AuthzWindow, "read-cache-authz-window", 2*time.Minute, "how long the API server's answer to a device's own read lets the device be served that object from memory")
	f.BoolVar(&cfg.Fleet.SharedPodWatch, "shared-pod-watch", true, "serve each device's watch of its own pods from one watch of the API server instead of relaying one watch per device (docs/memory.md; needs --compact)")
	f.BoolVar(&cfg.Gateway.AccessLog, "access-log", true, "log one line per request")
	f.BoolVar(&cfg.Gateway.DeviceMetrics, "device-metrics", true, "export Prometheus series per device (picogate_device_*): about 3.5 KB of gateway memory and three series per device")
	f.DurationVar(&cfg.Gateway.UpstreamTimeout, "upstream-timeout", 4500*time.Millisecond, "time the API server has to answer a non-watch request (503 with Retry-After beyond; the default keeps a device's wait under 5s)")
	f.DurationVar(&cfg.Gateway.WriteTimeout, "write-timeout", 30*time.Second, "time a device has to take each response or watch event")
	f.DurationVar(&cfg.Gateway.BodyTimeout, "body-timeout", 10*time.Second, "time a device has to send its request body")
	f.IntVar(&cfg.Gateway.MaxInFlight, "max-inflight", 512, "concurrent non-watch requests (503 beyond)")
	f.IntVar(&cfg.Gateway.MaxWatches, "max-watches", 20000, "concurrent watches (503 beyond)")
	f.IntVar(&cfg.Gateway.MaxDeviceWatches, "max-device-watches", 4, "concurrent watches per device (429 beyond)")
	f.DurationVar(&cfg.Gateway.MaxWatchTimeout, "max-watch-timeout", 30*time.Minute, "longest watch: a larger or absent timeoutSeconds is rewritten to this")
	f.Float64Var(&cfg.Gateway.DeviceRate, "device-rate", 5, "requests per second per device, and per source address without a device credential (429 beyond)")
	f.IntVar(&cfg.Gateway.DeviceBurst, "device-burst", 20, "burst per device")
	f.IntVar(&cfg.Gateway.SourceMaxInFlight, "max-source-inflight", 8, "concurrent requests, watches included, per source address without a device credential (429 beyond)")
	f.DurationVar(&cfg.Server.ReadHeaderTimeout, "read-header-timeout", 10*time.Second, "time a client has to send its request headers")
	f.DurationVar(&cfg.Server.IdleTimeout, "idle-timeout", 5*time.Second, "idle keep-alive connections are closed after this (each costs the gateway about 18 KB)")
	f.IntVar(&cfg.Server.MaxHeaderBytes, "max-header-bytes", 16<<10, "largest request header block (431 beyond)")
	f.DurationVar(&cfg.Server.ShutdownTimeout, "shutdown-timeout", 20*time.Second, "time in-flight requests get to finish on SIGTERM")
	f.StringVar(&devicePodCIDR, "device-pod-cidr", "auto", "the pod CIDR every device Node names, so boards leave the cluster's to real nodes: auto (the last node block of the cluster CIDR, once shown to be inside it), none, or CIDRs (one per cluster IP family)")
	f.StringVar(&clusterCIDR, "cluster-cidr", "", "kube-controller-manager's --cluster-cidr (default: read from the k3s servers' k3s.io/node-args; k3s's 10.42.0.0/16 when they set none)")
	f.IntVar(&nodeMask, "node-cidr-mask-size", 0, "kube-controller-manager's --node-cidr-mask-size (default: from the k3s servers' arguments, else the real nodes' pod CIDRs, else 24 for IPv4, 64 for IPv6)")
	f.BoolVar(&cfg.Upstream.HTTP2, "upstream-http2", true, "carry watches to the API server over HTTP/2 (they share a few connections), other requests over a pool of HTTP/1.1 connections (less CPU per request); false uses the HTTP/1.1 pool for watches too, one connection per watch")
	f.DurationVar(&cfg.Upstream.CertReloadInterval, "cert-reload-interval", 10*time.Second, "how often client-certificate files from the kubeconfig are re-read")
	return cmd
}

// tlsFlagsNeedListen refuses --tls-* settings without --tls-listen: they would silently do nothing.
func tlsFlagsNeedListen(cmd *cobra.Command, listen string) error {
	if listen != "" {
		return nil
	}
	for _, name := range []string{"tls-cert", "tls-key", "tls-ticket-key-file", "tls-max-handshakes", "tls-handshake-timeout", "tls-record-bytes"} {
		if cmd.Flags().Changed(name) {
			return fmt.Errorf("--%s: the TLS port is off; set --tls-listen too", name)
		}
	}
	return nil
}
