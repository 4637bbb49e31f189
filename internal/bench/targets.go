package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Target names, as --targets takes them.
const (
	TargetDirect     = "direct"
	TargetNginxSeed  = "nginx-seed"
	TargetNginxTuned = "nginx-tuned"
	TargetKubectl    = "kubectl-proxy"
	TargetShared     = "picogate-shared"
	TargetToken      = "picogate-token"
	// TargetTokenNoLog is picogate-token with --access-log=false: not how a user runs it, so it is
	// reported apart, to show what the access log costs.
	TargetTokenNoLog = "picogate-token-nolog"
	// TargetTokenBefore is picogate-token run from Config.CompareBin, another build of picogate, so one
	// interleaved run shows what a change did. Run only when CompareBin is set.
	TargetTokenBefore = "picogate-token-before"
)

// AllTargets is the default --targets, in report order. picogate-shared is not among them: without a
// device credential picogate allows only the firmware's requests (create a Node, patch a marked Node's
// status no device owns, read a ConfigMap), so the load workloads' GETs and PATCHes of the devices'
// Nodes are refused; it can still be named in --targets.
var AllTargets = []string{TargetDirect, TargetNginxSeed, TargetNginxTuned, TargetKubectl, TargetToken, TargetTokenNoLog}

// baseline is the target ratios are taken to.
const baseline = TargetNginxTuned

// target is one thing under test, running for the whole bench.
type target struct {
	name     string
	endpoint Endpoint
	// perDevice: every load connection authenticates as its own device (Authorization header).
	perDevice bool
	proc      *child // nil for direct HTTPS
	adminAddr string // picogate's admin port
	lab       *lab
}

// authHeader is the header line connection conn adds, or "".
func (t *target) authHeader(conn int) string {
	if !t.perDevice {
		return ""
	}
	return t.lab.creds[conn%len(t.lab.creds)].Header
}

// pids are the processes whose CPU and memory count as the proxy's: nginx's master and its workers
// (looked up each time: a worker is replaced if it dies), or the one process.
func (t *target) pids() []int {
	if t.proc == nil {
		return nil
	}
	pids := []int{t.proc.pid()}
	if strings.HasPrefix(t.name, "nginx") {
		kids, _ := t.lab.proc().Children(t.proc.pid())
		pids = append(pids, kids...)
	}
	return pids
}

func (t *target) stop() error {
	if t.proc == nil {
		return nil
	}
	return t.proc.stop(20 * time.Second)
}

func (l *lab) proc() *Proc { return l.cfg.proc }

// startTarget starts the named target and waits until it answers.
func (l *lab) startTarget(ctx context.Context, name string) (*target, error) {
	if name == TargetDirect {
		return &target{name: name, lab: l, endpoint: Endpoint{Addr: l.apiAddr, TLS: l.tls, Host: l.apiAddr}}, nil
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	t := &target{name: name, lab: l, endpoint: Endpoint{Addr: addr, Host: addr}}
	switch name {
	case TargetNginxSeed, TargetNginxTuned:
		err = l.startNginx(ctx, t)
	case TargetKubectl:
		err = l.startKubectl(ctx, t)
	case TargetShared, TargetToken, TargetTokenNoLog, TargetTokenBefore:
		err = l.startPicogate(ctx, t)
	default:
		err = fmt.Errorf("unknown target %q", name)
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

func (l *lab) startNginx(ctx context.Context, t *target) error {
	tmpl, err := os.ReadFile(filepath.Join(l.cfg.NginxConfDir, t.name+".conf"))
	if err != nil {
		return fmt.Errorf("reading the nginx config: %w", err)
	}
	dir := filepath.Join(l.dir, t.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("nginx folder: %w", err)
	}
	_, port, _ := strings.Cut(t.endpoint.Addr, ":")
	_, apiPort, _ := strings.Cut(l.apiAddr, ":")
	rc := l.cp.AdminConfig()
	conf := strings.NewReplacer("@DIR@", dir, "@PORT@", port, "@APISERVER_PORT@", apiPort,
		"@CLIENT_CERT@", rc.CertFile, "@CLIENT_KEY@", rc.KeyFile, "@CA_CERT@", rc.CAFile).Replace(string(tmpl))
	if placeholder.MatchString(conf) {
		return fmt.Errorf("%s.conf: a placeholder is left unfilled", t.name)
	}
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("writing the nginx config: %w", err)
	}
	// In the foreground, so the process started here is the master; -e before the config is read.
	t.proc, err = startChild(t.name, filepath.Join(dir, "stderr.log"), l.cfg.Nginx, "-c", file, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
	if err != nil {
		return err
	}
	return t.proc.waitReady(ctx, 20*time.Second, l.answers(t))
}

func (l *lab) startKubectl(ctx context.Context, t *target) error {
	_, port, _ := strings.Cut(t.endpoint.Addr, ":")
	var err error
	t.proc, err = startChild(t.name, filepath.Join(l.dir, "kubectl-proxy.log"), filepath.Join(l.cfg.BinDir, "kubectl"),
		"proxy", "--port", port, "--address", "127.0.0.1", "--kubeconfig", l.cp.AdminKubeconfig())
	if err != nil {
		return err
	}
	return t.proc.waitReady(ctx, 30*time.Second, l.answers(t))
}

func (l *lab) startPicogate(ctx context.Context, t *target) error {
	admin, err := freeAddr()
	if err != nil {
		return err
	}
	t.adminAddr = admin
	bin := filepath.Join(l.cfg.BinDir, "picogate")
	if t.name == TargetTokenBefore {
		bin = l.cfg.CompareBin
	}
	args := []string{bin, "serve", "--kubeconfig", l.cp.AdminKubeconfig(),
		"--listen", t.endpoint.Addr, "--admin-listen", admin}
	if l.cfg.CPUProfile != "" && l.picogateHas(ctx, "--profiling") {
		args = append(args, "--profiling")
	}
	switch t.name {
	case TargetShared:
		args = append(args, "--shared-identity")
	default:
		t.perDevice = true
		// Far above what 16 connections can send, so the rate limiter is exercised on every request but
		// never refuses one: the limit is not what is measured.
		args = append(args, "--device-rate", "1000000", "--device-burst", "1000000")
		// Every request forwarded, as nginx forwards it: the read cache and heartbeat translation (on by
		// default) would answer most of these from memory, which is not what is compared here.
		for _, f := range []string{"--read-cache", "--heartbeat-translation"} {
			if l.picogateHas(ctx, f) {
				args = append(args, f+"=false")
			}
		}
		// The fan-out's watchers are all device bench-1 (so every target forwards the same watch): far
		// above the per-device cap of 4 a board needs, or all but 4 of them are refused.
		args = append(args, "--max-device-watches", "1000")
		if t.name == TargetTokenNoLog {
			args = append(args, "--access-log=false")
		}
	}
	if t.proc, err = startChild(t.name, filepath.Join(l.dir, t.name+".log"), args...); err != nil {
		return err
	}
	return t.proc.waitReady(ctx, 60*time.Second, l.answers(t))
}

// picogateHas reports whether `picogate serve` knows flag (so the bench works with builds before it).
func (l *lab) picogateHas(ctx context.Context, flag string) bool {
	out, _ := exec.CommandContext(ctx, filepath.Join(l.cfg.BinDir, "picogate"), "serve", "--help").CombinedOutput()
	return strings.Contains(string(out), flag+" ")
}

// answers reports whether the target serves this bench's devices' own node: a proxy is up, and a
// picogate has loaded its device registry.
func (l *lab) answers(t *target) func() bool {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: t.endpoint.TLS}}
	scheme := "http://"
	if t.endpoint.TLS != nil {
		scheme = "https://"
	}
	return func() bool {
		req, err := http.NewRequest("GET", scheme+t.endpoint.Addr+"/api/v1/nodes/"+l.nodes[0], nil)
		if err != nil {
			return false
		}
		if h := t.authHeader(0); h != "" {
			k, v, _ := strings.Cut(h, ": ")
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
}

// requestHead is the start of every request to t from connection conn, in the reference firmware's
// header order: Host, User-Agent, Accept, Connection (close workloads only), then the device's one added
// header.
func (t *target) requestHead(conn int, method, path string, close bool) string {
	var b strings.Builder
	b.WriteString(method + " " + path + " HTTP/1.1\r\nHost: " + t.endpoint.Host + "\r\nUser-Agent: k3s-pico-node/1.0\r\nAccept: application/json\r\n")
	if close {
		b.WriteString("Connection: close\r\n")
	}
	if h := t.authHeader(conn); h != "" {
		b.WriteString(h + "\r\n")
	}
	return b.String()
}

// placeholder matches an unfilled @NAME@ in an nginx config template.
var placeholder = regexp.MustCompile(`@[A-Z_]+@`)
