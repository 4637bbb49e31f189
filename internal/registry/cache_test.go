package registry

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

// newTestCache is a Cache fed by the test: its informer is never started; the test calls the event
// handlers the informer would (upsert on add and update, remove on delete).
func newTestCache(t *testing.T) *Cache {
	t.Helper()
	c, err := NewCache(CacheConfig{Client: fake.NewClientset()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// deviceSecret is the Secret `picogate device add` would write for d.
func deviceSecret(d *Device) *corev1.Secret {
	return (&Store{Namespace: DefaultNamespace}).secret(d)
}

func ipDevice(t *testing.T, name, source string) *Device {
	t.Helper()
	src, err := ParseSource(source)
	if err != nil {
		t.Fatal(err)
	}
	return &Device{Name: name, Auth: AuthIP, Source: src, Created: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
}

func revoked(d *Device) *Device {
	c := *d
	c.Revoked = time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	return &c
}

// The README's promise: two ip-mode devices claiming one address are both refused, until one of them
// gives it up (removed, revoked or moved), when the other is served again.
func TestCacheDuplicateAddress(t *testing.T) {
	const a5, a6, a7 = "10.0.0.5", "10.0.0.6", "10.0.0.7"
	type event struct {
		add    *Device // upsert (add or update)
		delete string  // remove by device name
		tomb   bool    // the delete arrives as a tombstone (DeletedFinalStateUnknown)
	}
	c := newTestCache(t)
	current := map[string]*Device{}
	for _, step := range []struct {
		name string
		ev   event
		want map[string]string // address → the device it authenticates as ("" for none)
	}{
		{"one claimant is served", event{add: ipDevice(t, "pico-a", a5)}, map[string]string{a5: "pico-a"}},
		{"a second claimant: both refused", event{add: ipDevice(t, "pico-b", a5)}, map[string]string{a5: ""}},
		{"a third claimant", event{add: ipDevice(t, "pico-c", a5)}, map[string]string{a5: ""}},
		{"an update of a claimant in place", event{add: ipDevice(t, "pico-a", a5)}, map[string]string{a5: ""}},
		{"one of three removed: still two", event{delete: "pico-a"}, map[string]string{a5: ""}},
		{"one of two removed: the other is served", event{delete: "pico-b", tomb: true}, map[string]string{a5: "pico-c"}},
		{"a revoked claimant does not count", event{add: revoked(ipDevice(t, "pico-d", a5))}, map[string]string{a5: "pico-c"}},
		{"revoking the served one", event{add: revoked(ipDevice(t, "pico-c", a5))}, map[string]string{a5: ""}},
		{"a new claimant of a revoked one's address", event{add: ipDevice(t, "pico-e", a5)}, map[string]string{a5: "pico-e"}},
		{"a claimant by its IPv4-mapped form", event{add: ipDevice(t, "pico-f", "::ffff:"+a5)}, map[string]string{a5: ""}},
		{"moved away: the other is served", event{add: ipDevice(t, "pico-f", a6)}, map[string]string{a5: "pico-e", a6: "pico-f"}},
		{"a claimant by its IPv4-mapped prefix", event{add: ipDevice(t, "pico-g", "::ffff:"+a5+"/128")}, map[string]string{a5: ""}},
		{"the mapped claimant removed", event{delete: "pico-g"}, map[string]string{a5: "pico-e"}},
		{"moved onto a taken address", event{add: ipDevice(t, "pico-e", a6)}, map[string]string{a5: "", a6: ""}},
		{"moved on again", event{add: ipDevice(t, "pico-e", a7)}, map[string]string{a5: "", a6: "pico-f", a7: "pico-e"}},
		{"a token device with a source does not claim it", event{add: &Device{Name: "pico-t", Auth: AuthToken,
			TokenHash: HashToken("pgt_t"), Source: netip.MustParsePrefix(a7 + "/32")}}, map[string]string{a7: "pico-e"}},
	} {
		t.Run(step.name, func(t *testing.T) {
			switch ev := step.ev; {
			case ev.add != nil:
				c.upsert(deviceSecret(ev.add))
				current[ev.add.Name] = ev.add
			case ev.tomb:
				c.remove(cache.DeletedFinalStateUnknown{Key: "picogate-system/" + SecretName(ev.delete), Obj: deviceSecret(current[ev.delete])})
				delete(current, ev.delete)
			default:
				c.remove(deviceSecret(current[ev.delete]))
				delete(current, ev.delete)
			}
			for addr, want := range step.want {
				for _, form := range []string{addr, "::ffff:" + addr} { // a dual-stack listener sees the mapped form
					d, ok := c.ByAddr(netip.MustParseAddr(form))
					got := ""
					if ok {
						got = d.Name
					}
					if got != want {
						t.Errorf("ByAddr(%s): got %q, want %q", form, got, want)
					}
				}
			}
			// Refused by address, but every record stays known by name.
			for name := range current {
				if _, ok := c.ByName(name); !ok {
					t.Errorf("ByName(%s): not found, want the record", name)
				}
			}
			if c.Len() != len(current) {
				t.Errorf("Len: got %d, want %d", c.Len(), len(current))
			}
		})
	}
}

// Through the informer: Secrets written to the API show up in the Cache, and a second device on the
// same address takes the first one's address away.
func TestCacheDuplicateAddressThroughInformer(t *testing.T) {
	client := fake.NewClientset()
	c, err := NewCache(CacheConfig{Client: client})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var events []string
	c.Subscribe(func(name string, registered bool) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, name+map[bool]string{true: " changed", false: " removed"}[registered])
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitUntil(t, "the first sync", c.HasSynced)

	secrets := client.CoreV1().Secrets(DefaultNamespace)
	addr := netip.MustParseAddr("192.168.1.52")
	byAddr := func() string {
		if d, ok := c.ByAddr(addr); ok {
			return d.Name
		}
		return ""
	}
	if _, err := secrets.Create(ctx, deviceSecret(ipDevice(t, "pico-1", addr.String())), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "pico-1 served at its address", func() bool { return byAddr() == "pico-1" })
	if _, err := secrets.Create(ctx, deviceSecret(ipDevice(t, "pico-2", addr.String())), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "pico-2 known", func() bool { _, ok := c.ByName("pico-2"); return ok })
	if got := byAddr(); got != "" {
		t.Errorf("two devices on %s: got %q served, want none", addr, got)
	}
	if err := secrets.Delete(ctx, SecretName("pico-1"), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "pico-2 served once pico-1 is gone", func() bool { return byAddr() == "pico-2" })
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(events, "pico-1 removed") {
		t.Errorf("subscriber events: got %q, want pico-1 removed", strings.Join(events, ", "))
	}
}

// waitUntil polls cond until it holds, failing the test after a deadline.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestParseSource(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "invalid Prefix"},
		{"any", "invalid Prefix"},
		{"10.0.0.5", "10.0.0.5/32"},
		{"10.0.0.5/24", "10.0.0.0/24"},
		{"::ffff:10.0.0.5", "10.0.0.5/32"},
		{"::ffff:10.0.0.5/128", "10.0.0.5/32"},
		{"::ffff:10.0.0.0/120", "10.0.0.0/24"},
		{"::ffff:0.0.0.0/95", "::fffe:0:0/95"}, // wider than the mapped range: stays IPv6
		{"fd00::1", "fd00::1/128"},
		{"fd00::/64", "fd00::/64"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			p, err := ParseSource(tc.in)
			if err != nil || p.String() != tc.want {
				t.Errorf("ParseSource(%q): got %v, %v; want %s", tc.in, p, err, tc.want)
			}
		})
	}
	if _, err := ParseSource("pico"); err == nil {
		t.Error(`ParseSource("pico"): got no error, want one`)
	}
}
