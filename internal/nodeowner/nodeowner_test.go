package nodeowner

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/picogate/picogate/internal/registry"
)

func node(name string, labels map[string]string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Labels: labels},
	}
}

func marker() map[string]string { return map[string]string{registry.NodeMarkerLabel: "true"} }

func fakeClient(objs ...k8sruntime.Object) *fake.FakeMetadataClient {
	scheme := fake.NewTestScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		panic(err)
	}
	return fake.NewSimpleMetadataClient(scheme, objs...)
}

// started runs a Cache on client until the test ends and returns it synced, with a channel that receives
// the name of every Node the informer adds, updates or deletes afterwards.
func started(t *testing.T, client *fake.FakeMetadataClient) (*Cache, <-chan string) {
	t.Helper()
	c, err := New(Config{Client: client})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan string, 16)
	notify := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
			events <- m.Name
		}
	}
	if _, err := c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: notify, UpdateFunc: func(_, o any) { notify(o) }, DeleteFunc: notify,
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if !cache.WaitForCacheSync(ctx.Done(), c.HasSynced) {
		t.Fatal("cache did not sync")
	}
	return c, events
}

func waitEvent(t *testing.T, events <-chan string, name string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case got := <-events:
			if got == name {
				return
			}
		case <-timeout:
			t.Fatalf("no informer event for node %s within 5s", name)
		}
	}
}

func TestOwner(t *testing.T) {
	client := fakeClient(
		node("worker-1", map[string]string{"kubernetes.io/hostname": "worker-1"}),
		node("pico-1", marker()),
		node("pico-2", map[string]string{registry.NodeMarkerLabel: "false"}),
	)
	c, events := started(t, client)
	tests := []struct {
		name string
		want Ownership
	}{
		{"worker-1", Ownership{Exists: true}},
		{"pico-1", Ownership{Exists: true, Marked: true}},
		{"pico-2", Ownership{Exists: true}},
		{"nobody", Ownership{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.Owner(tt.name); got != tt.want {
				t.Errorf("Owner(%s): got %+v, want %+v", tt.name, got, tt.want)
			}
		})
	}
	if !c.Owner("worker-1").Foreign() || c.Owner("pico-1").Foreign() || c.Owner("nobody").Foreign() {
		t.Error("Foreign: want true only for a Node that exists without the marker")
	}
	if c.Len() != 3 {
		t.Errorf("Len: got %d, want 3", c.Len())
	}

	// A real node joining later under a would-be device name is seen as foreign.
	nodes := client.Resource(nodesResource())
	ctx := context.Background()
	if _, err := nodes.(fake.MetadataClient).CreateFake(node("pico-3", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, "pico-3")
	if got := c.Owner("pico-3"); got != (Ownership{Exists: true}) {
		t.Errorf("after a real node pico-3 joined: got %+v, want it to exist without the marker", got)
	}
	// The marker removed from pico-1 makes it foreign at once.
	if _, err := nodes.(fake.MetadataClient).UpdateFake(node("pico-1", map[string]string{"a": "b"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, "pico-1")
	if got := c.Owner("pico-1"); got != (Ownership{Exists: true}) {
		t.Errorf("pico-1 without its marker: got %+v, want unmarked", got)
	}
	if err := nodes.Delete(ctx, "worker-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, "worker-1")
	if got := c.Owner("worker-1"); got.Exists {
		t.Errorf("after worker-1 was deleted: got %+v, want it gone", got)
	}
}

func TestStripKeepsOnlyWhatIsRead(t *testing.T) {
	c, err := New(Config{Client: fakeClient()})
	if err != nil {
		t.Fatal(err)
	}
	in := node("pico-1", map[string]string{registry.NodeMarkerLabel: "true", "kubernetes.io/arch": "arm"})
	in.ResourceVersion = "42"
	in.Annotations = map[string]string{"node.alpha.kubernetes.io/ttl": "0"}
	in.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "k3s-pico-node"}}
	in.OwnerReferences = []metav1.OwnerReference{{Name: "x"}}
	out, err := c.strip(in)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*metav1.PartialObjectMetadata)
	want := metav1.ObjectMeta{Name: "pico-1", UID: "uid-pico-1", ResourceVersion: "42", Labels: marker()}
	if fmt.Sprint(got.ObjectMeta) != fmt.Sprint(want) || got.Kind != "" {
		t.Errorf("got %+v, want only %+v", got.ObjectMeta, want)
	}
	if got, _ := c.strip(node("worker-1", map[string]string{"kubernetes.io/arch": "amd64"})); got.(*metav1.PartialObjectMetadata).Labels != nil {
		t.Errorf("unmarked node: got labels %v, want none kept", got.(*metav1.PartialObjectMetadata).Labels)
	}
	if got, _ := c.strip(cache.DeletedFinalStateUnknown{Key: "x"}); got == nil {
		t.Error("a tombstone must pass through unchanged")
	}
}

// TestLookupReadsMisses: a name the cache does not hold is read from the API server, because a Node
// created a moment ago may not have reached the watch; an API error is an error, never "does not exist".
func TestLookupReadsMisses(t *testing.T) {
	client := fakeClient(node("fresh-real", nil), node("fresh-pico", marker()))
	c, err := New(Config{Client: client}) // not running: every name is a miss
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		want Ownership
	}{{"fresh-real", Ownership{Exists: true}}, {"fresh-pico", Ownership{Exists: true, Marked: true}}, {"nobody", Ownership{}}} {
		got, err := c.Lookup(ctx, tt.name)
		if err != nil || got != tt.want {
			t.Errorf("Lookup(%s): got %+v, %v, want %+v", tt.name, got, err, tt.want)
		}
	}
	client.PrependReactor("get", "nodes", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	if got, err := c.Lookup(ctx, "nobody"); err == nil || !strings.Contains(err.Error(), `reading node "nobody"`) {
		t.Errorf("API error: got %+v, %v, want an error naming the node", got, err)
	}
}

func TestNewReportsEveryProblem(t *testing.T) {
	_, err := New(Config{LookupTimeout: -time.Second})
	if err == nil {
		t.Fatal("got no error")
	}
	for _, want := range []string{"metadata client is required", "lookup timeout -1s is negative"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to mention %q", err, want)
		}
	}
}

// TestMemoryPerNode measures what one cached Node costs: the entry as strip leaves it, in the
// informer's store, for a fleet of 5,000 device Nodes and 100 real ones.
func TestMemoryPerNode(t *testing.T) {
	c, err := New(Config{Client: fakeClient()})
	if err != nil {
		t.Fatal(err)
	}
	const devices, real = 5000, 100
	realLabels := map[string]string{}
	for i := range 20 {
		realLabels[fmt.Sprintf("label-%d.example.com/key", i)] = strings.Repeat("v", 30)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	store := c.informer.GetStore()
	for i := range devices + real {
		n := node(fmt.Sprintf("pico-%05d", i), marker())
		if i >= devices {
			n = node(fmt.Sprintf("worker-%03d", i), realLabels)
			n.Annotations = realLabels
		}
		n.UID = types.UID(fmt.Sprintf("5f0c3a5e-9c1b-4b6e-8d2a-%012d", i))
		n.ResourceVersion = fmt.Sprint(1000000 + i)
		obj, _ := c.strip(n)
		if err := store.Add(obj); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / (devices + real)
	t.Logf("%d cached Nodes: %.0f bytes each, %.1f MiB in all", devices+real, per, per*(devices+real)/(1<<20))
	if per > 1024 {
		t.Errorf("got %.0f bytes per cached Node, want at most 1 KiB", per)
	}
	if store.(cache.Indexer) == nil || len(store.ListKeys()) != devices+real {
		t.Fatalf("got %d entries, want %d", len(store.ListKeys()), devices+real)
	}
	runtime.KeepAlive(store)
}
