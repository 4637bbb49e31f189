package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// apiCounters reads the API server's apiserver_request_total and
// apiserver_flowcontrol_rejected_requests_total, each summed over every label, with the admin's client.
func (l *lab) apiCounters(ctx context.Context) (requests, rejected float64, err error) {
	raw, err := l.admin.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the API server's metrics: %w", err)
	}
	if requests, _, err = sumCounter(string(raw), "apiserver_request_total"); err != nil {
		return 0, 0, err
	}
	rejected, _, err = sumCounter(string(raw), "apiserver_flowcontrol_rejected_requests_total")
	return requests, rejected, err
}

// etcdCounters are etcd's own counts of what it wrote.
type etcdCounters struct {
	walBytes float64 // etcd_disk_wal_write_bytes_total: bytes appended to its write-ahead log
	puts     float64 // etcd_mvcc_put_total: keys written
}

func (e etcdCounters) sub(o etcdCounters) etcdCounters {
	return etcdCounters{walBytes: e.walBytes - o.walBytes, puts: e.puts - o.puts}
}

// etcdCounters reads etcd's /metrics on its client port (plain HTTP, loopback).
func (l *lab) etcdCounters(ctx context.Context) (etcdCounters, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", l.cp.EtcdURL()+"/metrics", nil)
	if err != nil {
		return etcdCounters{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return etcdCounters{}, fmt.Errorf("reading etcd's metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return etcdCounters{}, fmt.Errorf("reading etcd's metrics: status %d, %v", resp.StatusCode, err)
	}
	return parseEtcdCounters(string(b))
}

// parseEtcdCounters finds etcd's write counters in its metrics; the log's bytes must be there.
func parseEtcdCounters(text string) (etcdCounters, error) {
	var c etcdCounters
	wal, found, err := sumCounter(text, "etcd_disk_wal_write_bytes_total")
	if err != nil {
		return c, err
	}
	if !found {
		return c, fmt.Errorf("etcd's metrics have no etcd_disk_wal_write_bytes_total")
	}
	c.walBytes = wal
	c.puts, _, err = sumCounter(text, "etcd_mvcc_put_total")
	return c, err
}

// sumCounter adds up every sample of the metric name in Prometheus text exposition, and says whether
// there was one.
func sumCounter(text, name string) (float64, bool, error) {
	var total float64
	found := false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		if rest != "" && rest[0] == '{' {
			rest = rest[strings.LastIndexByte(rest, '}')+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, false, fmt.Errorf("metric line %q: no value", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, false, fmt.Errorf("metric line %q: %w", line, err)
		}
		total += v
		found = true
	}
	return total, found, sc.Err()
}

// nodeLister lists Nodes in protobuf, the API server's cheapest encoding, for the Ready samples.
func (l *lab) nodeLister() (kubernetes.Interface, error) {
	if l.protoClient != nil {
		return l.protoClient, nil
	}
	rc := rest.CopyConfig(l.cp.AdminConfig())
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	rc.Timeout = time.Minute
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("protobuf client: %w", err)
	}
	l.protoClient = c
	return c, nil
}

// readyNodes counts the Nodes named prefix… whose Ready condition is True, as the API server serves
// them from its watch cache (resourceVersion 0: no etcd read).
func (l *lab) readyNodes(ctx context.Context, prefix string) (int, error) {
	c, err := l.nodeLister()
	if err != nil {
		return 0, err
	}
	list, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return 0, fmt.Errorf("listing nodes for the Ready count: %w", err)
	}
	return countReady(list.Items, prefix), nil
}

// countReady counts the nodes named prefix… with Ready=True.
func countReady(nodes []corev1.Node, prefix string) int {
	n := 0
	for i := range nodes {
		if !strings.HasPrefix(nodes[i].Name, prefix) {
			continue
		}
		for _, c := range nodes[i].Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				n++
				break
			}
		}
	}
	return n
}
