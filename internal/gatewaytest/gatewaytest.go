// Package gatewaytest runs the real picogate binary for integration tests: `picogate serve` on free
// loopback ports against a real control plane, with its log captured and shown when a test fails.
package gatewaytest

import (
	"bytes"
	"context"
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

// Binary returns the path of a picogate binary built by `make build`: $PICOGATE_BIN/picogate, else
// bin/picogate beside go.mod.
func Binary(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("PICOGATE_BIN")
	if dir == "" {
		wd, _ := os.Getwd()
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil && !strings.Contains(d, "/tools/") {
				dir = filepath.Join(d, "bin")
				break
			}
			if filepath.Dir(d) == d {
				t.Fatalf("no go.mod above %s", wd)
			}
		}
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not found in %s: run `make build` (or `make test`, which builds it)", name, dir)
	}
	return p
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

// Start starts picogate serve and stops it (SIGTERM) when the test ends.
func Start(t testing.TB, opts Options) *Gateway {
	t.Helper()
	g := New(t, opts)
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	return g
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
