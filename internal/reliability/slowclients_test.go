package reliability

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/sim"
)

// The device-port bounds under test, shortened from their defaults (10s, 10s, 5s) to keep the test
// short; docs/reliability.md states the defaults.
const (
	readHeaderTimeout = 3 * time.Second
	bodyTimeout       = 3 * time.Second
	idleTimeout       = 4 * time.Second
	maxHeaderBytes    = 16 << 10
	// closeSlack is how late after its timeout a connection may be closed on a loaded machine.
	closeSlack = 3 * time.Second

	idleConns     = 10000
	slowlorisConn = 200
	tricklers     = 50
	keptAlive     = 200

	// Per-connection memory the gateway may spend on a connection that sent nothing (or a whole
	// request, then nothing): net/http's goroutine (8 KiB stack to start), its 4 KiB read and 4 KiB
	// write buffers, and 8 KiB for the conn, its poll descriptor and bookkeeping. A partial header adds
	// at most --max-header-bytes plus 4 KiB, a trickled body at most 4 KiB before its timeout (the
	// gateway's body buffer grows with what arrives).
	idleConnBound = 24 << 10
)

// held is one attacking connection and when the gateway closed it.
type held struct {
	conn          net.Conn
	opened, ready time.Time // ready: when the attack's last byte went out (the timeout's start)
	closed        time.Time
	answer        string // the status line the gateway sent, if any
}

// watchClose reads c until the gateway closes it, noting when and any status line.
func (h *held) watchClose(wg *sync.WaitGroup, mu *sync.Mutex) {
	wg.Go(func() {
		br := bufio.NewReader(h.conn)
		line, _ := br.ReadString('\n')
		_, _ = io.Copy(io.Discard, br)
		mu.Lock()
		h.closed, h.answer = time.Now(), line
		mu.Unlock()
	})
}

// TestSlowAndIdleClients holds 10,000 idle connections, slowloris headers, bodies trickled at 1 byte/s
// and idle kept-alive connections against the device port while other devices work. Memory stays
// within the stated per-connection bound, the other devices' requests all succeed, and every attacking
// connection is closed by its timeout.
func TestSlowAndIdleClients(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < wantOpenFiles {
		t.Fatalf("RLIMIT_NOFILE is %d (hard %d), want at least %d for %d connections: raise the hard limit (ulimit -Hn)", lim.Cur, lim.Max, wantOpenFiles, idleConns)
	}
	gw := startGateway(t, "", "--read-header-timeout", readHeaderTimeout.String(), "--body-timeout", bodyTimeout.String(),
		"--idle-timeout", idleTimeout.String(), "--max-header-bytes", fmt.Sprint(maxHeaderBytes), "--access-log=false")
	creds := addDevices(t, "slow-", 20)
	probes := addDevices(t, "slow-probe-", 2)
	// Each trickled body is a device's request: 10 per device stays within its burst of 20.
	tricklerDevs := addDevices(t, "slow-trickle-", tricklers/10)
	waitAuthenticated(t, gw, tricklerDevs[len(tricklerDevs)-1].Token)
	fl := startFleet(t, sim.Config{Gateway: gw.URL(), Credentials: creds, Jitter: true, StartSpread: 2 * time.Second})

	rec := &recorder{}
	ctx, cancel := context.WithCancel(context.Background())
	var pwg sync.WaitGroup
	defer func() { cancel(); pwg.Wait() }()
	for _, p := range probes {
		pwg.Go(func() {
			probe{addr: fixedAddr(gw.Addr), name: p.Name, token: p.Token, interval: probeInterval, rec: rec}.run(ctx)
		})
	}
	time.Sleep(6 * time.Second)
	baseMem, baseFDs := mustProcMem(t, gw), openFDs(t, gw)
	baseGoroutines := metrics(t, gw)["go_goroutines"]
	attackStart := time.Now()

	var mu sync.Mutex
	var wg sync.WaitGroup
	idle := openIdle(t, gw.Addr, idleConns, &wg, &mu)
	opened := time.Now()
	slow := openSlowloris(t, gw.Addr, slowlorisConn, &wg, &mu)
	trickle := openTricklers(t, gw.Addr, tricklerDevs, tricklers, &wg, &mu)
	kept := openKeptAlive(t, gw.Addr, keptAlive, &wg, &mu)
	heldMem, heldFDs := mustProcMem(t, gw), openFDs(t, gw)
	heldGoroutines := metrics(t, gw)["go_goroutines"]
	t.Logf("opened %d idle connections in %v; %d slowloris, %d trickled bodies, %d kept-alive held", len(idle), opened.Sub(attackStart).Round(time.Millisecond), len(slow), len(trickle), len(kept))

	allClosed := func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, group := range [][]*held{idle, slow, trickle, kept} {
			for _, h := range group {
				if h.closed.IsZero() {
					return fmt.Errorf("a connection opened at %s still open", h.opened.Format("15:04:05.000"))
				}
			}
		}
		return nil
	}
	if _, err := waitFor(readHeaderTimeout+idleTimeout+bodyTimeout+2*closeSlack, 100*time.Millisecond, allClosed); err != nil {
		t.Errorf("attacking connections not all closed: %v", err)
	}
	peak := mustProcMem(t, gw)
	// The gateway reaps its side of each connection after the client's side is closed: wait until its
	// descriptors and goroutines are back within the bounds checked below (the check reports if not).
	_, _ = waitFor(10*time.Second, 100*time.Millisecond, func() error {
		if fds, g := openFDs(t, gw), metrics(t, gw)["go_goroutines"]; fds > baseFDs+50 || g > baseGoroutines+200 {
			return fmt.Errorf("%d fds, %.0f goroutines", fds, g)
		}
		return nil
	})
	afterMem, afterFDs := mustProcMem(t, gw), openFDs(t, gw)
	afterGoroutines := metrics(t, gw)["go_goroutines"]
	attackEnd := time.Now()
	time.Sleep(3 * time.Second)
	cancel()
	pwg.Wait()
	rep := fl.stop()
	for _, h := range slices.Concat(idle, slow, trickle, kept) {
		h.conn.Close()
	}
	wg.Wait()

	n := int64(len(idle) + len(slow) + len(trickle) + len(kept))
	grew := heldMem.RSS - baseMem.RSS
	bound := int64(len(idle)+len(kept))*idleConnBound + int64(len(slow))*(idleConnBound+maxHeaderBytes+4096) + int64(len(trickle))*(idleConnBound+4096)
	t.Logf("gateway RSS: %s before, %s holding %d connections (+%s, %.1f KiB each; bound %s), peak %s, %s after they closed",
		mib(baseMem.RSS), mib(heldMem.RSS), n, mib(grew), float64(grew)/float64(n)/1024, mib(bound), mib(peak.HWM), mib(afterMem.RSS))
	t.Logf("gateway fds: %d before, %d holding, %d after; goroutines %.0f before, %.0f holding, %.0f after", baseFDs, heldFDs, afterFDs, baseGoroutines, heldGoroutines, afterGoroutines)
	if grew > bound {
		t.Errorf("RSS grew by %s holding %d connections, want at most %s", mib(grew), n, mib(bound))
	}
	if afterFDs > baseFDs+50 {
		t.Errorf("open fds after the attack: got %d, want back near %d", afterFDs, baseFDs)
	}
	if afterGoroutines > baseGoroutines+200 {
		t.Errorf("goroutines after the attack: got %.0f, want back near %.0f", afterGoroutines, baseGoroutines)
	}

	checkClosedBy(t, "idle connection", idle, readHeaderTimeout, "")
	checkClosedBy(t, "slowloris header", slow, readHeaderTimeout, "")
	checkClosedBy(t, "trickled body", trickle, bodyTimeout, "HTTP/1.1 408")
	checkClosedBy(t, "kept-alive connection", kept, idleTimeout, "")

	before := between(rec.snapshot(), attackStart.Add(-5*time.Second), attackStart)
	during := between(rec.snapshot(), attackStart, attackEnd)
	t.Logf("other devices: %d probe requests before (p50 %v, p99 %v), %d during (%s; p50 %v, p99 %v)",
		len(before), percentile(before, 0.5).Round(time.Millisecond), percentile(before, 0.99).Round(time.Millisecond),
		len(during), formatTally(tally(during)), percentile(during, 0.5).Round(time.Millisecond), percentile(during, 0.99).Round(time.Millisecond))
	for _, r := range rec.snapshot() {
		if r.kind != kindOK {
			t.Errorf("another device: got %v at %s, want every request served", r, r.at.Format("15:04:05.000"))
		}
	}
	if len(during) == 0 {
		t.Error("no probe request during the attack")
	}
	if rep != nil {
		t.Logf("fleet: %d requests, errors %v", rep.Requests, rep.Errors)
		if len(rep.Errors) != 0 {
			t.Errorf("fleet errors: got %v, want none", rep.Errors)
		}
	}
}

// checkClosedBy asserts every connection was closed no later than timeout (plus slack) after its
// attack began, and that the gateway answered with wantAnswer's status line if one is given.
func checkClosedBy(t *testing.T, what string, hs []*held, timeout time.Duration, wantAnswer string) {
	t.Helper()
	var ds []time.Duration
	bad := 0
	for _, h := range hs {
		d := h.closed.Sub(h.ready)
		ds = append(ds, d)
		if h.closed.IsZero() || d > timeout+closeSlack || (wantAnswer != "" && len(h.answer) < len(wantAnswer)) || (wantAnswer != "" && h.answer[:len(wantAnswer)] != wantAnswer) {
			bad++
			if bad <= 3 {
				t.Errorf("%s: closed %v after it went quiet (answer %q), want by %v (+%v slack)%s", what, d.Round(time.Millisecond), h.answer, timeout, closeSlack, map[bool]string{true: " with " + wantAnswer}[wantAnswer != ""])
			}
		}
	}
	slices.Sort(ds)
	if len(ds) > 0 {
		t.Logf("%s: %d closed after %v (min) / %v (median) / %v (max); timeout %v", what, len(ds), ds[0].Round(time.Millisecond), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond), timeout)
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d not closed by the timeout", what, bad, len(hs))
	}
}

// dialMany opens n connections with a pool of dialers, calling after on each.
func dialMany(t *testing.T, addr string, n int, after func(h *held) error) []*held {
	t.Helper()
	out := make([]*held, n)
	jobs := make(chan int)
	var wg sync.WaitGroup
	var failMu sync.Mutex
	var firstErr error
	for range 64 {
		wg.Go(func() {
			for i := range jobs {
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err == nil {
					h := &held{conn: c, opened: time.Now()}
					h.ready = h.opened
					if err = after(h); err == nil {
						out[i] = h
						continue
					}
					c.Close()
				}
				failMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				failMu.Unlock()
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("opening connections: %v", firstErr)
	}
	return out
}

// openIdle opens connections that never send a byte.
func openIdle(t *testing.T, addr string, n int, wg *sync.WaitGroup, mu *sync.Mutex) []*held {
	return dialMany(t, addr, n, func(h *held) error { h.watchClose(wg, mu); return nil })
}

// openSlowloris opens connections that send a request line and then one header byte per second,
// forever; the gateway's header timeout runs from the first byte.
func openSlowloris(t *testing.T, addr string, n int, wg *sync.WaitGroup, mu *sync.Mutex) []*held {
	return dialMany(t, addr, n, func(h *held) error {
		if _, err := io.WriteString(h.conn, "GET /version HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
			return err
		}
		h.watchClose(wg, mu)
		wg.Go(func() {
			for {
				time.Sleep(time.Second)
				if _, err := h.conn.Write([]byte("a")); err != nil {
					return
				}
				mu.Lock()
				closed := !h.closed.IsZero()
				mu.Unlock()
				if closed {
					return
				}
			}
		})
		return nil
	})
}

// openTricklers send a device's complete headers announcing a 1,000-byte body, then one byte per
// second: the gateway's body timeout runs from the headers.
func openTricklers(t *testing.T, addr string, devs []sim.Credential, n int, wg *sync.WaitGroup, mu *sync.Mutex) []*held {
	var next atomic.Int64
	return dialMany(t, addr, n, func(h *held) error {
		token := devs[int(next.Add(1))%len(devs)].Token
		req := "POST /api/v1/nodes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
		if _, err := io.WriteString(h.conn, req); err != nil {
			return err
		}
		h.ready = time.Now()
		h.watchClose(wg, mu)
		wg.Go(func() {
			for {
				time.Sleep(time.Second)
				mu.Lock()
				closed := !h.closed.IsZero()
				mu.Unlock()
				if closed {
					return
				}
				if _, err := h.conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		})
		return nil
	})
}

// openKeptAlive sends one complete request (answered 401: no credential, nothing forwarded) on a
// keep-alive connection, reads the answer, then stays silent: the idle timeout runs from the answer.
func openKeptAlive(t *testing.T, addr string, n int, wg *sync.WaitGroup, mu *sync.Mutex) []*held {
	return dialMany(t, addr, n, func(h *held) error {
		if _, err := io.WriteString(h.conn, "GET /version HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		br := bufio.NewReader(h.conn)
		_ = h.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Close {
			return fmt.Errorf("kept-alive request: got %d (close %v), want 401 on an open connection", resp.StatusCode, resp.Close)
		}
		_ = h.conn.SetReadDeadline(time.Time{})
		h.ready = time.Now()
		wg.Go(func() {
			_, _ = io.Copy(io.Discard, br)
			mu.Lock()
			h.closed = time.Now()
			mu.Unlock()
		})
		return nil
	})
}
