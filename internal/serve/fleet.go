package serve

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/picogate/picogate/internal/asdevice"
	"github.com/picogate/picogate/internal/gateway"
	"github.com/picogate/picogate/internal/heartbeat"
	"github.com/picogate/picogate/internal/podwatch"
	"github.com/picogate/picogate/internal/readcache"
	"github.com/picogate/picogate/internal/registry"
	"github.com/picogate/picogate/internal/upstream"
)

// Fleet is what makes a board nearly free for the control plane (docs/heartbeat.md): heartbeat
// translation and cached reads. picogate serve turns both on; the zero value has both off.
type Fleet struct {
	// HeartbeatTranslation turns a firmware's status-PATCH heartbeats into Lease renewals and writes
	// the Node status only on change, every report interval, or when it may be Unknown.
	HeartbeatTranslation bool
	// Heartbeat configures it (Upstream and Logger are filled in).
	Heartbeat heartbeat.Config
	// ReadCache answers devices' repeated GETs (ConfigMaps, their own Node and Lease) from memory.
	ReadCache bool
	// Reads configures it (Upstream and Logger are filled in).
	Reads readcache.Config
	// SharedPodWatch serves each device's watch of its own pods from one watch of the API server
	// (package podwatch; docs/memory.md).
	SharedPodWatch bool
	// PodWatch configures it (Source, AsDevice and Logger are filled in).
	PodWatch podwatch.Config
}

// fleetParts are the built features: the gateway's answers and their metrics, what follows a device's
// change, and the read cache's sweeper.
type fleetParts struct {
	answers    []gateway.Answer
	watches    []gateway.Answer                                         // device watches served by the gateway
	forwarded  func(r *http.Request, d *registry.Device) func(code int) // the API server's answers to devices
	collectors []prometheus.Collector
	priority   func(r *http.Request, d *registry.Device) bool // heartbeats of boards already up
	changed    []func(name string, registered bool)
	run        []func(context.Context) error
}

// buildFleet builds the features cfg turns on, both making their requests as the device over the
// gateway's upstream transport.
func buildFleet(cfg Fleet, up *upstream.Upstream, log *slog.Logger) (*fleetParts, error) {
	f := &fleetParts{}
	if !cfg.HeartbeatTranslation && !cfg.ReadCache && !cfg.SharedPodWatch {
		return f, nil
	}
	client, err := asdevice.New(asdevice.Config{Base: up.URL, Transport: up.Transport})
	if err != nil {
		return nil, err
	}
	var cache *readcache.Cache
	if cfg.ReadCache {
		rc := cfg.Reads
		rc.Upstream, rc.Logger = client, log
		if cache, err = readcache.New(rc); err != nil {
			return nil, fmt.Errorf("--read-cache: %w", err)
		}
		f.changed = append(f.changed, cache.Forget)
		f.collectors = append(f.collectors, cache.Collectors()...)
		f.run = append(f.run, cache.Run)
	}
	if cfg.HeartbeatTranslation {
		hc := cfg.Heartbeat
		hc.Upstream, hc.Logger = client, log
		if cache != nil {
			hc.OnWritten = cache.Observe
		}
		tr, err := heartbeat.New(hc)
		if err != nil {
			return nil, fmt.Errorf("--heartbeat-translation: %w", err)
		}
		f.answers = append(f.answers, tr.ServeStatusPatch)
		f.changed = append(f.changed, func(name string, _ bool) { tr.Forget(name) })
		f.collectors = append(f.collectors, tr.Collectors()...)
		f.priority = tr.Heartbeating
		log.Info("heartbeat translation: Lease renewals for status-PATCH heartbeats", "renew_interval", tr.RenewInterval(),
			"grace_period", hc.GracePeriod, "report_interval", hc.ReportInterval, "coalesce_leases", hc.CoalesceLeases)
	}
	if cache != nil {
		f.answers = append(f.answers, func(w http.ResponseWriter, r *http.Request, d *registry.Device, _ []byte) bool {
			return cache.ServeGet(w, r, d)
		})
	}
	if cfg.SharedPodWatch {
		pc := cfg.PodWatch
		pc.Source, pc.AsDevice, pc.Logger = podwatch.RESTSource(up.Client.CoreV1().RESTClient()), client, log
		hub, err := podwatch.New(pc)
		if err != nil {
			return nil, fmt.Errorf("--shared-pod-watch: %w", err)
		}
		f.watches = append(f.watches, hub.ServeWatch)
		f.forwarded = hub.Observe
		f.changed = append(f.changed, hub.Forget)
		f.collectors = append(f.collectors, hub.Collectors()...)
		f.run = append(f.run, hub.Run)
	}
	return f, nil
}
