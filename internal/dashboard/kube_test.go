package dashboard

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientfeatures "k8s.io/client-go/features"
	clientfeaturestesting "k8s.io/client-go/features/testing"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/picogate/picogate/device"
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

func TestTrimNodeKeepsWhatThePageShows(t *testing.T) {
	hb := metav1.NewTime(time.Unix(1_800_000_000, 0))
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "pico-1", ResourceVersion: "42", UID: "u1",
			Labels:      map[string]string{device.BoardLabel: "pico-w", "other": "x"},
			Annotations: map[string]string{"a": strings.Repeat("b", 1000)}},
		Status: corev1.NodeStatus{
			NodeInfo:   corev1.NodeSystemInfo{KubeletVersion: "fw-2026.11", MachineID: "m", KernelVersion: "k"},
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "pico-1"}, {Type: corev1.NodeInternalIP, Address: "192.168.1.7"}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "ok", LastHeartbeatTime: hb, LastTransitionTime: hb}},
			Images:     []corev1.ContainerImage{{Names: []string{"img"}}},
		},
	}
	k := &kubeView{nodes: map[string]*nodeInfo{}}
	k.upsertNode(n)
	want := *k.nodes["pico-1"]
	tr := trimNode(n)
	k.upsertNode(tr)
	if got := *k.nodes["pico-1"]; !reflect.DeepEqual(got, want) {
		t.Errorf("page from the trimmed Node: got %+v, want %+v", got, want)
	}
	if tr.Annotations != nil || tr.Status.Images != nil || tr.Status.NodeInfo.MachineID != "" || len(tr.Labels) != 1 || len(tr.Status.Addresses) != 1 {
		t.Errorf("trimmed Node keeps more than the page shows: %+v", tr)
	}
	if tr.Name != n.Name || tr.ResourceVersion != n.ResourceVersion || tr.UID != n.UID {
		t.Errorf("trimmed Node: got %s/%s/%s, want the informer's name, resourceVersion and UID", tr.Name, tr.ResourceVersion, tr.UID)
	}
}
