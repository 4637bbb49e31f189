// Package gatewaytest runs the real picogate binary, built from the module's source, for integration
// tests: `picogate serve` on free loopback ports against a real control plane, with its log captured and
// shown when a test fails.
package gatewaytest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options configures one gateway process.
type Options struct {
	// Kubeconfig the gateway uses. Required.
	Kubeconfig string
	// Args are extra `picogate serve` flags.
	Args []string
	// Listen and AdminListen default to free ports on 127.0.0.1.
	Listen, AdminListen string
	// NoWaitReady returns as soon as the device port accepts connections, without waiting for /readyz.
	NoWaitReady bool
	// Env is added to the test's environment for the process ("GOGC=50").
	Env []string
}

// Gateway is a running picogate process.
type Gateway struct {
	t        testing.TB
	opts     Options
	cmd      *exec.Cmd
	done     chan struct{}
	exitErr  error
	mu       sync.Mutex
	log      bytes.Buffer
	Addr     string // device port, host:port
	Admin    string // admin port, host:port
	stopOnce sync.Once
}

// Binary returns the path of the named command (picogate, picosim, ...) built from this module's
// source, so a test never runs a binary older than the code it checks. The build goes to a cache folder
// shared by every test process of the module (under a file lock), where `go build` only relinks when a
// source changed: the first package pays one link, the others a check of about 0.3s. PICOGATE_BIN is
// not consulted: it names the control plane's binaries, which this module does not build. Under -short
// the test is skipped.
func Binary(t testing.TB, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the " + name + " binary (not in -short)")
	}
	b := builds.get(name)
	b.once.Do(func() { b.path, b.err = buildShared(name) })
	if b.err != nil {
		t.Fatalf("building %s for the test: %v", name, b.err)
	}
	return b.path
}

// builds remembers each command's build for the life of the test process.
var builds = buildCache{m: map[string]*builtBinary{}}

type buildCache struct {
	mu sync.Mutex
	m  map[string]*builtBinary
}

type builtBinary struct {
	once sync.Once
	path string
	err  error
}

func (c *buildCache) get(name string) *builtBinary {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.m[name]
	if b == nil {
		b = &builtBinary{}
		c.m[name] = b
	}
	return b
}

// buildShared builds name into a cache folder named after the module root. The lock keeps test packages
// running side by side from writing the same file at once; go build replaces the file by unlinking it,
// so a binary still running is not disturbed.
func buildShared(name string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(base, "picogate-test", hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking %s: %w", dir, err)
	}
	return build(root, dir, name)
}

// build runs `go build -trimpath -o DIR/name ./cmd/name` in the module root. go build decides from the
// build ID inside an existing DIR/name whether it is current, never from its time stamp.
func build(root, dir, name string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/"+name)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/%s: %w\n%s", name, err, b)
	}
	return out, nil
}

// ModuleRoot is the folder of this module's go.mod, found upwards from the working directory (a test
// runs in its package's folder).
func ModuleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil && !strings.Contains(d, "/tools/") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}

// FreeAddr returns a free 127.0.0.1 port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Start starts picogate serve and stops it (SIGTERM) when the test ends. Ports it picks itself are tried
// again, other ones, when another process took one between FreeAddr and picogate's bind (test packages
// run in parallel).
func Start(t testing.TB, opts Options) *Gateway {
	t.Helper()
	for attempt := 1; ; attempt++ {
		g := New(t, opts)
		err := g.Start()
		if err == nil {
			return g
		}
		if attempt < 3 && opts.Listen == "" && opts.AdminListen == "" && strings.Contains(err.Error(), "address already in use") {
			t.Logf("picogate could not bind a port picked for it, trying others: %v", err)
			continue
		}
		t.Fatal(err)
	}
}

// New prepares a gateway without starting it.
func New(t testing.TB, opts Options) *Gateway {
	t.Helper()
	if opts.Listen == "" {
		opts.Listen = FreeAddr(t)
	}
	if opts.AdminListen == "" {
		opts.AdminListen = FreeAddr(t)
	}
	g := &Gateway{t: t, opts: opts, Addr: opts.Listen, Admin: opts.AdminListen}
	t.Cleanup(func() {
		if g.cmd != nil {
			g.Stop()
		}
		if t.Failed() {
			t.Logf("picogate log (%s):\n%s", g.Addr, g.Log())
		}
	})
	return g
}

// Start starts (or restarts, after Stop) the process and waits until it is ready.
func (g *Gateway) Start() error {
	args := append([]string{"serve", "--kubeconfig", g.opts.Kubeconfig, "--listen", g.opts.Listen, "--admin-listen", g.opts.AdminListen, "--log-format", "json"}, g.opts.Args...)
	g.cmd = exec.Command(Binary(g.t, "picogate"), args...)
	g.cmd.Stdout, g.cmd.Stderr = (*lockedWriter)(g), (*lockedWriter)(g)
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if len(g.opts.Env) > 0 {
		g.cmd.Env = append(os.Environ(), g.opts.Env...)
	}
	g.done = make(chan struct{})
	g.stopOnce = sync.Once{}
	if err := g.cmd.Start(); err != nil {
		return fmt.Errorf("starting picogate: %w", err)
	}
	go func() { g.exitErr = g.cmd.Wait(); close(g.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-g.done:
			return fmt.Errorf("picogate exited early (%v):\n%s", g.exitErr, g.Log())
		default:
		}
		if g.opts.NoWaitReady {
			if c, err := net.DialTimeout("tcp", g.Addr, time.Second); err == nil {
				c.Close()
				return nil
			}
		} else if g.Ready() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("picogate not ready within 60s:\n%s", g.Log())
}

// Ready reports whether /readyz answers 200.
func (g *Gateway) Ready() bool {
	resp, err := http.Get("http://" + g.Admin + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// URL is the device port's base URL.
func (g *Gateway) URL() string { return "http://" + g.Addr }

// PID is the running process's id (for reading /proc/PID in tests); 0 before Start.
func (g *Gateway) PID() int {
	if g.cmd == nil || g.cmd.Process == nil {
		return 0
	}
	return g.cmd.Process.Pid
}

// Signal sends sig to the process.
func (g *Gateway) Signal(sig os.Signal) { _ = g.cmd.Process.Signal(sig) }

// Wait waits for the process to exit and returns its error (nil for exit 0).
func (g *Gateway) Wait(timeout time.Duration) error {
	select {
	case <-g.done:
		return g.exitErr
	case <-time.After(timeout):
		return errors.New("picogate did not exit in time")
	}
}

// Exited is closed when the process has exited (Wait then returns at once).
func (g *Gateway) Exited() <-chan struct{} { return g.done }

// Stop sends SIGTERM and waits; it kills the process if it does not exit within 30s.
func (g *Gateway) Stop() {
	g.stopOnce.Do(func() {
		g.Signal(syscall.SIGTERM)
		if err := g.Wait(30 * time.Second); err != nil && err.Error() == "picogate did not exit in time" {
			_ = g.cmd.Process.Kill()
			<-g.done
		}
	})
}

// Log returns everything the process printed so far.
func (g *Gateway) Log() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.log.String()
}

type lockedWriter Gateway

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.log.Write(p)
}

// WaitFor polls cond every 20ms until it is true or timeout passes.
func WaitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}
