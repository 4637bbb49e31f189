// Package nodeowner tells the gateway, for any node name, whether a Node of that name exists and whether
// picogate created it for a device (the label registry.NodeMarkerLabel). Device names share the namespace
// of real nodes: a device named like a real kubelet node would be forwarded as system:node:NAME and the
// API server's Node authorizer would hand it that node's pods and Secrets. The gateway therefore refuses
// a device whose Node exists without the marker, and writes from the shared identity to any such Node.
//
// The view is a metadata-only informer on Nodes: the API server sends object metadata, not the 5-15 KB
// of a kubelet's Node, and each cached entry keeps only the name, the UID and whether the marker is set,
// so 5,000 device Nodes plus the real ones cost a few megabytes (see TestMemoryPerNode).
package nodeowner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"

	"github.com/picogate/picogate/internal/registry"
)

// nodesResource is the resource the cache watches.
func nodesResource() schema.GroupVersionResource {
	return schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
}

// Config configures a Cache.
type Config struct {
	// Client reads Node metadata (get, list, watch nodes). Required.
	Client metadata.Interface
	// LookupTimeout bounds the live read Lookup makes for a name the cache does not hold. Default 2s.
	LookupTimeout time.Duration
	// Logger; default discards.
	Logger *slog.Logger
}

// Ownership is what the gateway needs to know about one node name.
type Ownership struct {
	// Exists: a Node of that name exists.
	Exists bool
	// Marked: it carries registry.NodeMarkerLabel, so picogate created it for a device.
	Marked bool
}

// Foreign reports whether the name belongs to a Node picogate did not create: a real node, or one made
// by someone else. No device may act as it, and the shared identity may not write it.
func (o Ownership) Foreign() bool { return o.Exists && !o.Marked }

// Cache is the watched view of Node ownership. Lookups are served from the informer's store (a
// read-locked map); if the API server becomes unreachable the last synced view keeps serving.
type Cache struct {
	cfg      Config
	log      *slog.Logger
	informer cache.SharedIndexInformer
	// marked is the one label map every marked entry shares: entries are never modified after the
	// transform, so one map serves them all.
	marked map[string]string

	watchErr atomic.Pointer[watchError]
}

type watchError struct {
	err error
	at  time.Time
}

// New builds a Cache; Run starts it.
func New(cfg Config) (*Cache, error) {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("node ownership: a Kubernetes metadata client is required"))
	}
	if cfg.LookupTimeout < 0 {
		errs = append(errs, fmt.Errorf("node ownership: lookup timeout %s is negative", cfg.LookupTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.LookupTimeout == 0 {
		cfg.LookupTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cache{cfg: cfg, log: cfg.Logger.With("component", "nodes"), marked: map[string]string{registry.NodeMarkerLabel: "true"}}
	nodes := cfg.Client.Resource(nodesResource())
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			l, err := nodes.List(ctx, o)
			c.reached(err)
			return l, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			w, err := nodes.Watch(ctx, o)
			c.reached(err)
			return w, err
		},
	}, cfg.Client)
	c.informer = cache.NewSharedIndexInformer(lw, &metav1.PartialObjectMetadata{}, 0, cache.Indexers{})
	if err := c.informer.SetTransform(c.strip); err != nil {
		return nil, fmt.Errorf("node ownership: %w", err)
	}
	if err := c.informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		c.watchErr.Store(&watchError{err: err, at: time.Now()})
		c.log.Warn("node watch failed; serving the last synced view of node ownership", "err", err)
	}); err != nil {
		return nil, fmt.Errorf("node ownership: %w", err)
	}
	return c, nil
}

// strip keeps the name, UID and resource version and, as labels, only the marker: nothing else of a
// Node is ever read, and a kubelet's Node carries dozens of labels and annotations.
func (c *Cache) strip(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	out := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: m.Name, UID: m.UID, ResourceVersion: m.ResourceVersion}}
	if registry.IsDeviceNode(m.Labels) {
		out.Labels = c.marked
	}
	return out, nil
}

// Run keeps the view in sync until ctx ends. It starts the informer once Nodes can be listed, for the
// reason registry.Cache does: a gateway started during an API server outage says why in its log and is
// ready soon after the API server is back.
func (c *Cache) Run(ctx context.Context) error {
	if !c.waitListable(ctx) {
		return nil
	}
	c.informer.RunWithContext(ctx)
	return nil
}

// HasSynced reports whether the first full list has been loaded. Until then Owner knows nothing.
func (c *Cache) HasSynced() bool { return c.informer.HasSynced() }

// Owner reports, from the cache, whether a Node named name exists and whether it carries the marker.
// It allocates nothing and takes only a read lock: it is on every device request's path.
func (c *Cache) Owner(name string) Ownership {
	obj, ok, _ := c.informer.GetStore().GetByKey(name)
	if !ok {
		return Ownership{}
	}
	m, ok := obj.(*metav1.PartialObjectMetadata)
	return Ownership{Exists: true, Marked: ok && registry.IsDeviceNode(m.Labels)}
}

// Lookup is Owner, but a name the cache does not hold is read from the API server: a Node created a
// moment ago may not have reached the watch yet. The shared identity's writes use it, since for them a
// wrong "does not exist" would let a write reach a Node that is not a device's.
func (c *Cache) Lookup(ctx context.Context, name string) (Ownership, error) {
	if o := c.Owner(name); o.Exists {
		return o, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.LookupTimeout)
	defer cancel()
	m, err := c.cfg.Client.Resource(nodesResource()).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return Ownership{}, nil
	case err != nil:
		return Ownership{}, fmt.Errorf("reading node %q: %w", name, err)
	}
	return Ownership{Exists: true, Marked: registry.IsDeviceNode(m.Labels)}, nil
}

// Len is the number of Nodes in the cache.
func (c *Cache) Len() int { return len(c.informer.GetStore().ListKeys()) }

// WatchError returns when the last watch failure happened and the failure, if the informer has not
// listed or watched the Nodes successfully since.
func (c *Cache) WatchError() (time.Time, error) {
	if w := c.watchErr.Load(); w != nil {
		return w.at, w.err
	}
	return time.Time{}, nil
}

// reached forgets a watch failure once one of the informer's list or watch requests succeeds again.
func (c *Cache) reached(err error) {
	if err == nil {
		c.watchErr.Store(nil)
	}
}
