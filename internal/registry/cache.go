package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// CacheConfig configures a Cache.
type CacheConfig struct {
	// Client reads the device Secrets. Required.
	Client kubernetes.Interface
	// Namespace holds the device Secrets. Default "picogate-system".
	Namespace string
	// Logger; default discards.
	Logger *slog.Logger
}

// DefaultNamespace is where device records live unless --namespace says otherwise.
const DefaultNamespace = "picogate-system"

// Cache is the gateway's view of the device Secrets, kept current by a client-go informer. Lookups are
// served from memory; if the API server becomes unreachable the last synced state keeps serving.
type Cache struct {
	cfg      CacheConfig
	log      *slog.Logger
	informer cache.SharedIndexInformer

	mu      sync.RWMutex
	bySec   map[string]*Device            // by Secret name
	byName  map[string]*Device            // by device name (hmac mode: the Credential of a signed request)
	byHash  map[[sha256.Size]byte]*Device // current and next token hashes
	byAddr  map[netip.Addr]*Device
	dupAddr map[netip.Addr]int // ip-mode addresses claimed by more than one device: refused

	watchErr atomic.Pointer[watchError]

	subMu sync.Mutex
	subs  []func(name string, registered bool) // appended to a clipped slice: a copy read is stable
}

type watchError struct {
	err error
	at  time.Time
}

// NewCache builds a Cache; Run starts it.
func NewCache(cfg CacheConfig) (*Cache, error) {
	if cfg.Client == nil {
		return nil, errors.New("device registry: a Kubernetes client is required")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Cache{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "registry"),
		bySec:   map[string]*Device{},
		byName:  map[string]*Device{},
		byHash:  map[[sha256.Size]byte]*Device{},
		byAddr:  map[netip.Addr]*Device{},
		dupAddr: map[netip.Addr]int{},
	}
	sel := labels.SelectorFromSet(labels.Set{LabelKind: KindDevice}).String()
	typeSel := fields.OneTermEqualSelector("type", SecretType).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector, o.FieldSelector = sel, typeSel
			l, err := cfg.Client.CoreV1().Secrets(cfg.Namespace).List(ctx, o)
			r.reached(err)
			return l, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector, o.FieldSelector = sel, typeSel
			w, err := cfg.Client.CoreV1().Secrets(cfg.Namespace).Watch(ctx, o)
			r.reached(err)
			return w, err
		},
	}
	// The wrapper tells the reflector when the client cannot stream a watch-list (client-go's fake
	// clientset), so it lists instead of waiting for a bookmark that never comes.
	r.informer = cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, cfg.Client), &corev1.Secret{}, 0, cache.Indexers{})
	if err := r.informer.SetTransform(stripSecret); err != nil {
		return nil, fmt.Errorf("device registry: %w", err)
	}
	if err := r.informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		r.watchErr.Store(&watchError{err: err, at: time.Now()})
		r.log.Warn("device registry watch failed; serving the last synced registry", "err", err)
	}); err != nil {
		return nil, fmt.Errorf("device registry: %w", err)
	}
	if _, err := r.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.upsert(obj) },
		UpdateFunc: func(_, obj any) { r.upsert(obj) },
		DeleteFunc: r.remove,
	}); err != nil {
		return nil, fmt.Errorf("device registry: %w", err)
	}
	return r, nil
}

// stripSecret keeps only what the registry reads, so 10,000 cached device records stay small.
func stripSecret(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil
	}
	s.ManagedFields = nil
	s.Annotations = nil
	return s, nil
}

// Run keeps the registry in sync until ctx ends. It starts the informer once the device records can be
// listed (see waitListable).
func (r *Cache) Run(ctx context.Context) error {
	if !r.waitListable(ctx) {
		return nil
	}
	r.informer.RunWithContext(ctx)
	return nil
}

// HasSynced reports whether the first full list has been loaded.
func (r *Cache) HasSynced() bool { return r.informer.HasSynced() }

// WatchError returns the last watch failure and when it happened, if the informer has not listed or
// watched the device records successfully since. Only the informer's own requests set and clear it, so
// reading it (the readiness probe) changes nothing.
func (r *Cache) WatchError() (time.Time, error) {
	if w := r.watchErr.Load(); w != nil {
		return w.at, w.err
	}
	return time.Time{}, nil
}

// reached forgets a watch failure once one of the informer's list or watch requests succeeds again.
func (r *Cache) reached(err error) {
	if err == nil {
		r.watchErr.Store(nil)
	}
}

// Subscribe adds f to the functions called after a device's credential changes (revoked, rotated) or
// its record is removed, with whether the device is still registered: how the gateway ends that device's
// open watches. f runs on the informer's goroutine, so it must not block.
func (r *Cache) Subscribe(f func(name string, registered bool)) {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	r.subs = append(r.subs[:len(r.subs):len(r.subs)], f)
}

func (r *Cache) notify(name string, registered bool) {
	r.subMu.Lock()
	subs := r.subs
	r.subMu.Unlock()
	for _, f := range subs {
		f(name, registered)
	}
}

// Len is the number of device records.
func (r *Cache) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.bySec)
}

// Names returns the names of all registered devices.
func (r *Cache) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.bySec))
	for _, d := range r.bySec {
		out = append(out, d.Name)
	}
	return out
}

// ByToken finds the device holding token, as its current token or as the one a rotation issued. The map
// is keyed by the token's hash, so the lookup reveals nothing about the token, and the hash is then
// compared in constant time. A revoked device is returned too (the caller refuses it and counts the
// reason).
func (r *Cache) ByToken(token string) (*Device, bool) {
	h := HashToken(token)
	r.mu.RLock()
	d, ok := r.byHash[h]
	r.mu.RUnlock()
	if !ok || subtle.ConstantTimeCompare(d.TokenHash[:], h[:])|subtle.ConstantTimeCompare(d.NextTokenHash[:], h[:]) != 1 {
		return nil, false
	}
	return d, true
}

// ByName finds a device by name: how a signed request's Credential is looked up. The caller checks the
// signature against the device's keys.
func (r *Cache) ByName(name string) (*Device, bool) {
	r.mu.RLock()
	d, ok := r.byName[name]
	r.mu.RUnlock()
	return d, ok
}

// ByAddr finds the ip-mode device registered at addr. An address claimed by two devices matches none.
func (r *Cache) ByAddr(addr netip.Addr) (*Device, bool) {
	r.mu.RLock()
	d, ok := r.byAddr[addr.Unmap()]
	r.mu.RUnlock()
	return d, ok
}

func (r *Cache) upsert(obj any) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	d, err := fromSecretData(s.Data)
	if err != nil {
		r.log.Error("ignoring invalid device record", "secret", s.Name, "err", err)
		r.removeByKey(s.Name)
		return
	}
	if SecretName(d.Name) != s.Name {
		r.log.Error("ignoring device record whose name does not match its Secret", "secret", s.Name, "device", d.Name)
		r.removeByKey(s.Name)
		return
	}
	r.mu.Lock()
	old := r.bySec[s.Name]
	r.unindex(old)
	r.bySec[s.Name] = d
	r.index(d)
	r.mu.Unlock()
	if old != nil && (old.TokenHash != d.TokenHash || !bytes.Equal(old.Key, d.Key) || old.Revoked != d.Revoked || old.Source != d.Source || old.Auth != d.Auth) {
		r.notify(d.Name, true)
	}
}

func (r *Cache) remove(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if s, ok := obj.(*corev1.Secret); ok {
		r.removeByKey(s.Name)
	}
}

func (r *Cache) removeByKey(secret string) {
	r.mu.Lock()
	old := r.bySec[secret]
	r.unindex(old)
	delete(r.bySec, secret)
	r.mu.Unlock()
	if old != nil {
		r.notify(old.Name, false)
	}
}

// index and unindex keep the lookup maps in step; callers hold mu.
func (r *Cache) index(d *Device) {
	r.byName[d.Name] = d
	switch d.Auth {
	case AuthToken:
		for _, h := range [...][sha256.Size]byte{d.TokenHash, d.NextTokenHash} {
			if h != ([sha256.Size]byte{}) {
				r.byHash[h] = d
			}
		}
	case AuthIP:
		if d.IsRevoked() {
			return
		}
		a := d.Source.Addr()
		r.dupAddr[a]++
		if r.dupAddr[a] > 1 {
			delete(r.byAddr, a)
			r.log.Error("source address claimed by more than one ip-mode device; refusing all of them", "addr", a)
			return
		}
		r.byAddr[a] = d
	}
}

func (r *Cache) unindex(d *Device) {
	if d == nil {
		return
	}
	if cur, ok := r.byName[d.Name]; ok && cur == d {
		delete(r.byName, d.Name)
	}
	switch d.Auth {
	case AuthToken:
		for _, h := range [...][sha256.Size]byte{d.TokenHash, d.NextTokenHash} {
			if cur, ok := r.byHash[h]; ok && cur == d {
				delete(r.byHash, h)
			}
		}
	case AuthIP:
		if d.IsRevoked() {
			return
		}
		a := d.Source.Addr()
		if cur, ok := r.byAddr[a]; ok && cur == d {
			delete(r.byAddr, a)
		}
		if r.dupAddr[a]--; r.dupAddr[a] <= 0 {
			delete(r.dupAddr, a)
		} else if r.dupAddr[a] == 1 {
			// The conflict is resolved: re-admit the remaining claimant.
			for _, other := range r.bySec {
				if other != d && other.Auth == AuthIP && !other.IsRevoked() && other.Source.Addr() == a {
					r.byAddr[a] = other
				}
			}
		}
	}
}
