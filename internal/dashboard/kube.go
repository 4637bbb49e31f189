package dashboard

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/picogate/picogate/device"
)

// NodeCondition is one condition of a device's Node, as the device page shows it.
type NodeCondition struct {
	Type       string `json:"type"`
	Status     string `json:"status"`
	Reason     string `json:"reason,omitempty"`
	Message    string `json:"message,omitempty"`
	Heartbeat  int64  `json:"heartbeat,omitempty"`  // unix milliseconds
	Transition int64  `json:"transition,omitempty"` // unix milliseconds
}

// nodeInfo is what the dashboard keeps of a device's Node.
type nodeInfo struct {
	ready      string // True, False, Unknown
	conditions []NodeCondition
	firmware   string // status.nodeInfo.kubeletVersion: the firmware's version
	board      string // label picogate.io/board
	address    string // InternalIP
}

// Pod phases, in the order the page shows their counts.
var podPhases = [...]corev1.PodPhase{corev1.PodPending, corev1.PodRunning, corev1.PodSucceeded, corev1.PodFailed, corev1.PodUnknown}

// PodInfo is one pod bound to a device.
type PodInfo struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Phase     string `json:"phase"`
}

// kubeView is the Kubernetes side of the dashboard: Nodes, the Leases of kube-node-lease, and the pods
// bound to nodes, each kept by an informer whose objects are trimmed to what the page shows (a Node to
// its conditions, addresses, labels and node info; a pod to its name, node and phase).
type kubeView struct {
	client kubernetes.Interface
	log    *slog.Logger

	mu          sync.RWMutex
	status      string // "" when the view is complete and synced; else what is missing, for the page
	nodes       map[string]*nodeInfo
	leases      map[string]int64                      // node name → renewTime, unix milliseconds
	pods        map[string]map[string]corev1.PodPhase // node name → "namespace/name" → phase
	nodesSynced cache.InformerSynced                  // set once the node informer runs: the Ready chart needs it synced
}

func newKubeView(client kubernetes.Interface, log *slog.Logger) *kubeView {
	k := &kubeView{client: client, log: log, nodes: map[string]*nodeInfo{}, leases: map[string]int64{}, pods: map[string]map[string]corev1.PodPhase{}}
	if client == nil {
		k.status = "no Kubernetes client: the Kubernetes view is off"
	} else {
		k.status = "starting"
	}
	return k
}

// source is one part of the view: an informer and the rights it needs.
type source struct {
	what   string // for the page: "nodes", "leases in kube-node-lease", "pods"
	access []authzv1.ResourceAttributes
	start  func() cache.SharedIndexInformer
	synced cache.InformerSynced
}

func (k *kubeView) sources() []*source {
	lease := func(verb string) authzv1.ResourceAttributes {
		return authzv1.ResourceAttributes{Verb: verb, Group: "coordination.k8s.io", Resource: "leases", Namespace: "kube-node-lease"}
	}
	return []*source{
		{what: "nodes", access: []authzv1.ResourceAttributes{{Verb: "list", Resource: "nodes"}, {Verb: "watch", Resource: "nodes"}}, start: k.nodeInformer},
		{what: "leases in kube-node-lease", access: []authzv1.ResourceAttributes{lease("list"), lease("watch")}, start: k.leaseInformer},
		{what: "pods", access: []authzv1.ResourceAttributes{{Verb: "list", Resource: "pods"}, {Verb: "watch", Resource: "pods"}}, start: k.podInformer},
	}
}

// run starts each part of the view whose rights the gateway's credential has, checking first so that
// a gateway without them says so on the page instead of logging a refused watch every second. Parts
// still missing are checked again every minute. It returns when ctx ends.
func (k *kubeView) run(ctx context.Context) {
	if k.client == nil {
		return
	}
	pending := k.sources()
	var started []*source
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var missing []string
		var checkErr error
		for _, src := range pending {
			ok, err := k.allowed(ctx, src.access)
			if err != nil {
				checkErr = err
				missing = append(missing, src.what)
				continue
			}
			if !ok {
				missing = append(missing, src.what)
				continue
			}
			inf := src.start()
			src.synced = inf.HasSynced
			started = append(started, src)
			wg.Go(func() { inf.RunWithContext(ctx) })
		}
		pending = slices.DeleteFunc(pending, func(s *source) bool { return s.synced != nil })
		synced := make([]cache.InformerSynced, 0, len(started))
		for _, s := range started {
			synced = append(synced, s.synced)
		}
		switch {
		case checkErr != nil:
			k.setStatus("Kubernetes view unavailable: checking the gateway's rights: " + checkErr.Error())
		case len(missing) > 0:
			k.setStatus("Kubernetes view incomplete: the gateway's credential may not list and watch " + strings.Join(missing, ", ") +
				" (deploy/rbac.yaml grants it)")
		default:
			k.setStatus("syncing")
		}
		if len(started) > 0 && !cache.WaitForCacheSync(ctx.Done(), synced...) {
			return
		}
		if len(pending) == 0 {
			k.setStatus("")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Minute):
		}
	}
}

func (k *kubeView) setStatus(s string) {
	k.mu.Lock()
	k.status = s
	k.mu.Unlock()
}

// allowed asks the API server whether the gateway's credential may do all of access.
func (k *kubeView) allowed(ctx context.Context, access []authzv1.ResourceAttributes) (bool, error) {
	for _, ra := range access {
		rev, err := k.client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authzv1.SelfSubjectAccessReview{
			Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra}}, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		if !rev.Status.Allowed {
			return false, nil
		}
	}
	return true, nil
}

func listWatch[L runtime.Object](list func(context.Context, metav1.ListOptions) (L, error), watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error), opts func(*metav1.ListOptions)) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			opts(&o)
			return list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			opts(&o)
			return watchFn(ctx, o)
		},
	}
}

func (k *kubeView) nodeInformer() cache.SharedIndexInformer {
	// Every Node, not only those labelled registry.NodeMarkerLabel: a device's Node created before the
	// gateway set the label has none. Rows come from the registry, so a real node is never shown.
	nodes := k.client.CoreV1().Nodes()
	inf := cache.NewSharedIndexInformer(listWatch(nodes.List, nodes.Watch, func(*metav1.ListOptions) {}), &corev1.Node{}, 0, cache.Indexers{})
	k.mu.Lock()
	k.nodesSynced = inf.HasSynced
	k.mu.Unlock()
	_ = inf.SetTransform(func(obj any) (any, error) {
		if n, ok := obj.(*corev1.Node); ok {
			return trimNode(n), nil
		}
		return obj, nil
	})
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    k.upsertNode,
		UpdateFunc: func(_, obj any) { k.upsertNode(obj) },
		DeleteFunc: func(obj any) {
			if n, ok := unwrap(obj).(*corev1.Node); ok {
				k.mu.Lock()
				delete(k.nodes, n.Name)
				k.mu.Unlock()
			}
		},
	})
	return inf
}

func (k *kubeView) upsertNode(obj any) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	ni := &nodeInfo{firmware: n.Status.NodeInfo.KubeletVersion, board: n.Labels[device.BoardLabel]}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			ni.address = a.Address
		}
	}
	for _, c := range n.Status.Conditions {
		ni.conditions = append(ni.conditions, NodeCondition{Type: string(c.Type), Status: string(c.Status), Reason: c.Reason,
			Message: c.Message, Heartbeat: c.LastHeartbeatTime.UnixMilli(), Transition: c.LastTransitionTime.UnixMilli()})
		if c.Type == corev1.NodeReady {
			ni.ready = string(c.Status)
		}
	}
	if ni.ready == "" {
		ni.ready = string(corev1.ConditionUnknown)
	}
	k.mu.Lock()
	k.nodes[n.Name] = ni
	k.mu.Unlock()
}

// trimNode is what upsertNode reads of a Node, and what the informer needs (name, resourceVersion,
// UID), in a new object: the informer keeps it for every Node of the cluster, so the decoded one,
// with its images, capacity, annotations and node info, is left to the collector.
func trimNode(n *corev1.Node) *corev1.Node {
	t := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, ResourceVersion: n.ResourceVersion, UID: n.UID}}
	if b, ok := n.Labels[device.BoardLabel]; ok {
		t.Labels = map[string]string{device.BoardLabel: b}
	}
	t.Status.NodeInfo.KubeletVersion = n.Status.NodeInfo.KubeletVersion
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			t.Status.Addresses = append(t.Status.Addresses, a)
		}
	}
	t.Status.Conditions = slices.Clone(n.Status.Conditions)
	return t
}

func (k *kubeView) leaseInformer() cache.SharedIndexInformer {
	leases := k.client.CoordinationV1().Leases("kube-node-lease")
	inf := cache.NewSharedIndexInformer(listWatch(leases.List, leases.Watch, func(*metav1.ListOptions) {}), &coordv1.Lease{}, 0, cache.Indexers{})
	_ = inf.SetTransform(func(obj any) (any, error) {
		if l, ok := obj.(*coordv1.Lease); ok {
			l.ManagedFields, l.Annotations, l.Labels, l.OwnerReferences = nil, nil, nil, nil
		}
		return obj, nil
	})
	set := func(obj any) {
		l, ok := obj.(*coordv1.Lease)
		if !ok || l.Spec.RenewTime == nil {
			return
		}
		k.mu.Lock()
		k.leases[l.Name] = l.Spec.RenewTime.UnixMilli()
		k.mu.Unlock()
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, obj any) { set(obj) },
		DeleteFunc: func(obj any) {
			if l, ok := unwrap(obj).(*coordv1.Lease); ok {
				k.mu.Lock()
				delete(k.leases, l.Name)
				k.mu.Unlock()
			}
		},
	})
	return inf
}

func (k *kubeView) podInformer() cache.SharedIndexInformer {
	pods := k.client.CoreV1().Pods("")
	sel := fields.OneTermNotEqualSelector("spec.nodeName", "").String()
	inf := cache.NewSharedIndexInformer(listWatch(pods.List, pods.Watch, func(o *metav1.ListOptions) { o.FieldSelector = sel }), &corev1.Pod{}, 0, cache.Indexers{})
	_ = inf.SetTransform(func(obj any) (any, error) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return obj, nil
		}
		// Keep what the page shows and what the informer needs (name, namespace, resourceVersion).
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, ResourceVersion: p.ResourceVersion, UID: p.UID},
			Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName},
			Status:     corev1.PodStatus{Phase: p.Status.Phase},
		}, nil
	})
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    k.upsertPod,
		UpdateFunc: func(_, obj any) { k.upsertPod(obj) },
		DeleteFunc: func(obj any) {
			if p, ok := unwrap(obj).(*corev1.Pod); ok {
				k.mu.Lock()
				if m := k.pods[p.Spec.NodeName]; m != nil {
					delete(m, p.Namespace+"/"+p.Name)
					if len(m) == 0 {
						delete(k.pods, p.Spec.NodeName)
					}
				}
				k.mu.Unlock()
			}
		},
	})
	return inf
}

func (k *kubeView) upsertPod(obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	m := k.pods[p.Spec.NodeName]
	if m == nil {
		m = map[string]corev1.PodPhase{}
		k.pods[p.Spec.NodeName] = m
	}
	m[p.Namespace+"/"+p.Name] = p.Status.Phase
	k.mu.Unlock()
}

func unwrap(obj any) any {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}

// kubeRow is one device's Kubernetes side, as the fleet table needs it.
type kubeRow struct {
	ready      string
	leaseRenew int64
	pods       [len(podPhases)]uint16
	firmware   string
	board      string
}

// row reads one device's Kubernetes side; callers hold k.mu for reading.
func (k *kubeView) row(name string) kubeRow {
	var r kubeRow
	if n := k.nodes[name]; n != nil {
		r.ready, r.firmware, r.board = n.ready, n.firmware, n.board
	}
	r.leaseRenew = k.leases[name]
	for _, ph := range k.pods[name] {
		for i, p := range podPhases {
			if ph == p || (i == len(podPhases)-1 && ph == "") {
				r.pods[i]++
				break
			}
		}
	}
	return r
}

// readyCount is the number of device Nodes Ready, and of device Nodes (Nodes named like a registered
// device); -1, -1 while the Nodes are not known.
func (k *kubeView) readyCount(isDevice func(string) bool) (ready, nodes int) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.nodesSynced == nil || !k.nodesSynced() {
		return -1, -1
	}
	for name, n := range k.nodes {
		if !isDevice(name) {
			continue
		}
		nodes++
		if n.ready == string(corev1.ConditionTrue) {
			ready++
		}
	}
	return ready, nodes
}
