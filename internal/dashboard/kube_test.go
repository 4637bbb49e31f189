package dashboard

import (
	"context"
	"strings"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientfeatures "k8s.io/client-go/features"
	clientfeaturestesting "k8s.io/client-go/features/testing"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestKubeViewSaysWhatIsMissing: without the rights to read pods, the view says so on the page (and
// starts the parts it may read) instead of running a watch the API server refuses.
func TestKubeViewSaysWhatIsMissing(t *testing.T) {
	// The fake clientset cannot stream a watch-list: list then watch instead. Set on client-go's feature
	// gates themselves, for this test only: the environment variable is read once per process, at first
	// use, which an earlier test of the package has already made.
	clientfeaturestesting.SetFeatureDuringTest(t, clientfeatures.WatchListClient, false)
	client := fake.NewClientset()
	client.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authzv1.SelfSubjectAccessReview)
		r.Status.Allowed = r.Spec.ResourceAttributes.Resource != "pods"
		return true, r, nil
	})
	k := newKubeView(client, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { k.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		k.mu.RLock()
		status, synced := k.status, k.nodesSynced
		k.mu.RUnlock()
		if strings.Contains(status, "may not list and watch pods") && synced != nil && synced() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("got status %q, want it to name pods as missing, with the Nodes synced", status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ready, nodes := k.readyCount(func(string) bool { return true }); ready != 0 || nodes != 0 {
		t.Errorf("ready count: got %d of %d, want 0 of 0 (nodes readable, none there)", ready, nodes)
	}
}
