package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/picogate/picogate/internal/controlplane"
	"github.com/picogate/picogate/internal/registry"
)

// lab is the shared ground every target is measured on: one control plane and the objects the
// workloads touch.
type lab struct {
	cfg     *Config
	cp      *controlplane.ControlPlane
	dir     string // the run folder: configs, logs, credentials
	admin   kubernetes.Interface
	tls     *tls.Config // the admin's client certificate, for direct HTTPS and the watchers
	apiAddr string
	apiPID  int
	etcdPID int
	nodes   []string     // bench-1 … bench-Conns, one per load connection
	creds   []credential // their device tokens, same order
	// protoClient lists the fleet's Nodes in protobuf (nodeLister).
	protoClient kubernetes.Interface
	// watchRev numbers the fan-out changes across targets and rounds (they all change one pod).
	watchRev atomic.Int64
}

// credential is one entry of `picogate device add -o json`.
type credential struct {
	Name   string `json:"name"`
	Auth   string `json:"auth"`
	Token  string `json:"token"`
	Header string `json:"header"`
}

const (
	// loadNodeLabel marks the load connections' nodes, which resetDevices keeps.
	loadNodeLabel  = "picobench/load"
	watchNamespace = "default"
	watchPod       = "bench-watch"
)

func startLab(ctx context.Context, cfg *Config) (*lab, error) {
	l := &lab{cfg: cfg, dir: cfg.WorkDir}
	var err error
	// A fleet run needs kube-controller-manager: its node lifecycle controller is what makes Ready
	// mean anything (a Node whose Lease and status both lapse for the grace period turns Unknown), and
	// its Lease garbage and taints are part of a real cluster's load. The target runs leave it out, as
	// they always have: nothing there depends on it.
	l.cp, err = controlplane.Start(ctx, controlplane.Config{BinDir: cfg.BinDir, Dir: filepath.Join(l.dir, "controlplane"), Logger: cfg.Logger,
		ControllerManager: len(cfg.Fleet) > 0})
	if err != nil {
		return nil, err
	}
	if err := l.prepare(ctx); err != nil {
		return nil, errors.Join(err, l.stop())
	}
	return l, nil
}

func (l *lab) prepare(ctx context.Context) error {
	rc := l.cp.AdminConfig()
	var err error
	if l.admin, err = kubernetes.NewForConfig(rc); err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	if l.tls, err = clientTLS(rc.CAFile, rc.CertFile, rc.KeyFile); err != nil {
		return err
	}
	l.apiAddr = strings.TrimPrefix(l.cp.URL(), "https://")
	_, apiPort, _ := strings.Cut(l.apiAddr, ":")
	if l.apiPID, err = findProcess(controlplane.APIServer, "--secure-port="+apiPort); err != nil {
		return err
	}
	if l.etcdPID, err = findProcess(controlplane.Etcd, "--listen-client-urls="+l.cp.EtcdURL()); err != nil {
		return err
	}
	for i := 1; i <= l.cfg.Conns; i++ {
		l.nodes = append(l.nodes, "bench-"+strconv.Itoa(i))
	}
	if err := l.createNodes(ctx); err != nil {
		return err
	}
	if l.creds, err = l.addDevices(ctx, "bench-", l.cfg.Conns); err != nil {
		return err
	}
	return l.createWatchPod(ctx)
}

// createNodes creates the bench nodes and sends each one heartbeat under the firmware's User-Agent, so
// their managedFields already hold both managers and a GET returns the same size before and after the
// PATCH workloads.
func (l *lab) createNodes(ctx context.Context) error {
	rc := rest.CopyConfig(l.cp.AdminConfig())
	rc.UserAgent = "k3s-pico-node/1.0"
	fw, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("firmware-like client: %w", err)
	}
	for _, n := range l.nodes {
		if _, err := l.admin.CoreV1().Nodes().Create(ctx, firmwareNode(n), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating node %s: %w", n, err)
		}
		body := heartbeat(time.Now(), "127.0.0.1")
		if _, err := fw.CoreV1().Nodes().Patch(ctx, n, types.StrategicMergePatchType, []byte(body), metav1.PatchOptions{}, "status"); err != nil {
			return fmt.Errorf("first heartbeat of node %s: %w", n, err)
		}
	}
	return nil
}

// addDevices registers n token devices with the picogate CLI, as an operator would, and saves their
// credentials as PREFIXcredentials.json. Up to 250 go in one `device add --count`; larger fleets are
// added by several CLI processes at once (named PREFIX<batch>-<i>): the CLI's client stays within
// client-go's default 5 requests/s and needs two per device, so 10,000 devices in one process would
// take over half an hour.
func (l *lab) addDevices(ctx context.Context, prefix string, n int) ([]credential, error) {
	const batch = 250
	if n <= batch {
		return l.addBatch(ctx, prefix, prefix, n)
	}
	parts := make([][]credential, (n+batch-1)/batch)
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i := range parts {
		wg.Go(func() {
			parts[i], errs[i] = l.addBatch(ctx, prefix+strconv.Itoa(i+1)+"-", "", min(batch, n-i*batch))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	all := slices.Concat(parts...)
	b, err := json.Marshal(all)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(l.dir, prefix+"credentials.json"), b, 0o600); err != nil {
		return nil, fmt.Errorf("saving credentials: %w", err)
	}
	return all, nil
}

// addBatch runs one `picogate device add --count n --prefix prefix`, saving the output as
// SAVEcredentials.json unless save is empty.
func (l *lab) addBatch(ctx context.Context, prefix, save string, n int) ([]credential, error) {
	out, err := l.picogateCLI(ctx, "device", "add", "--count", strconv.Itoa(n), "--prefix", prefix, "-o", "json")
	if err != nil {
		return nil, err
	}
	var creds []credential
	if err := json.Unmarshal(out, &creds); err != nil || len(creds) != n {
		return nil, fmt.Errorf("picogate device add: got %d credentials (%v), want %d", len(creds), err, n)
	}
	if save != "" {
		if err := os.WriteFile(filepath.Join(l.dir, save+"credentials.json"), out, 0o600); err != nil {
			return nil, fmt.Errorf("saving credentials: %w", err)
		}
	}
	return creds, nil
}

func (l *lab) picogateCLI(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(l.cfg.BinDir, "picogate"), append(args, "--kubeconfig", l.cp.AdminKubeconfig())...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("picogate %s: %w: %s", strings.Join(args[:2], " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// createWatchPod creates the object the fan-out watchers watch: a pod bound to bench-1, which every
// target's watchers (devices as bench-1 in token mode) may watch with spec.nodeName=bench-1.
func (l *lab) createWatchPod(ctx context.Context) error {
	// No controller manager runs, so the ServiceAccount admission wants is created by hand.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	if _, err := l.admin.CoreV1().ServiceAccounts(watchNamespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating service account: %w", err)
	}
	no := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: watchPod, Annotations: map[string]string{watchAnnotation: "0"}},
		Spec: corev1.PodSpec{
			NodeName:                     l.nodes[0],
			AutomountServiceAccountToken: &no,
			Containers:                   []corev1.Container{{Name: "app", Image: "picogate.local/blink:1"}},
		},
	}
	if _, err := l.admin.CoreV1().Pods(watchNamespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating watch pod: %w", err)
	}
	return nil
}

func (l *lab) stop() error {
	if l.cp == nil {
		return nil
	}
	return l.cp.Stop()
}

// firmwareNode is a Node shaped like the one the reference firmware registers (about 1.6 KB).
func firmwareNode(name string) *corev1.Node {
	now := metav1.Now()
	q := func(s string) resource.Quantity { return resource.MustParse(s) }
	res := corev1.ResourceList{corev1.ResourceCPU: q("1"), corev1.ResourceMemory: q("256Ki"), corev1.ResourcePods: q("0")}
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"kubernetes.io/arch": "arm", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
			"node.kubernetes.io/instance-type": "rp2040-pico", loadNodeLabel: "true",
			// As the gateway marks a Node a device creates through it: picogate refuses a device
			// whose name an unmarked (real) Node has.
			registry.NodeMarkerLabel: "true",
		}},
		Status: corev1.NodeStatus{
			Capacity: res, Allocatable: res,
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady"),
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory"),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure"),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID"),
				cond(corev1.NodeNetworkUnavailable, corev1.ConditionFalse, "RouteCreated"),
			},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: name}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID: "rp2040", SystemUUID: "rp2040", BootID: "1", KernelVersion: "pico-sdk-2.0",
				OSImage: "Raspberry Pi Pico W", ContainerRuntimeVersion: "none://0", KubeletVersion: "v1.37.2-pico",
				KubeProxyVersion: "v1.37.2-pico", //nolint:staticcheck // deprecated, but the reference firmware still sends it
				OperatingSystem:  "linux", Architecture: "arm",
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
		},
	}
}

func clientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("no certificate in the CA file")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the admin client certificate: %w", err)
	}
	// A session cache lets the new-connection-per-request workloads resume TLS sessions, as nginx's
	// proxy_ssl_session_reuse does: the fair best a direct client could do.
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "localhost",
		NextProtos: []string{"http/1.1"}, ClientSessionCache: tls.NewLRUClientSessionCache(256)}, nil
}

// findProcess finds the control plane process named binary by an argument only it has.
func findProcess(binary, arg string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("finding the %s process: %w", binary, err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if filepath.Base(args[0]) == binary && slices.Contains(args, arg) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("finding the %s process: none has %s", binary, arg)
}
