package reliability

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/hmacauth"
)

const (
	// floodConns anonymous clients each claim a known hmac device's name with a current timestamp and
	// a made-up signature, and send all but the last byte of a maximum-size body, then wait.
	floodConns = 1500
	floodBody  = 64 << 10
	// unverifiedBudget is the gateway's --max-unverified-body-bytes default.
	unverifiedBudget = 4 << 20
)

// TestUnverifiedBodyFlood: a signed request's body is read before its signature can be checked, so a
// stranger who knows an hmac device's name (it is in every signed header) and the time can make the
// gateway buffer bodies for requests that will fail. What all strangers together make it hold is bounded
// by the budget of unverified bytes, not by the number of connections; the requests beyond the budget
// are refused at once (503 with Retry-After, connection closed), those within it at their body timeout,
// and a real device's requests go on meanwhile. The device's rate limit is lifted so the budget is the
// only bound under test.
func TestUnverifiedBodyFlood(t *testing.T) {
	gw := startGateway(t, "", "--body-timeout", bodyTimeout.String(), "--access-log=false", "--device-rate", "100000", "--device-burst", "100000")
	var hmacDev struct{ Name string }
	if err := json.Unmarshal([]byte(picogateCLI(t, "device", "add", "flood-h1", "--auth", "hmac", "-o", "json")), &hmacDev); err != nil {
		t.Fatal(err)
	}
	probes := addDevices(t, "flood-probe-", 1)
	waitAuthenticated(t, gw, probes[0].Token)
	time.Sleep(2 * time.Second) // the gateway settles after start (registry sync, first requests)
	base := mustProcMem(t, gw)

	var mu sync.Mutex
	var wg sync.WaitGroup
	body := strings.Repeat("x", floodBody-1)
	conns := dialMany(t, gw.Addr, floodConns, func(h *held) error {
		if _, err := io.WriteString(h.conn, forgedHead(hmacDev.Name)+body); err != nil {
			return nil // the gateway refused and closed while the body went out: counted below
		}
		h.ready = time.Now()
		h.watchClose(&wg, &mu)
		return nil
	})
	held := mustProcMem(t, gw)
	rec := &recorder{}
	for range 5 {
		rec.add(strictDo(gw.Addr, request{op: "get-version", method: "GET", path: "/version", auth: probes[0].Token}, 5*time.Second))
	}

	allClosed := func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, h := range conns {
			if h.closed.IsZero() && !h.ready.IsZero() {
				return fmt.Errorf("a connection opened at %s still open", h.opened.Format("15:04:05.000"))
			}
		}
		return nil
	}
	if _, err := waitFor(bodyTimeout+2*closeSlack, 100*time.Millisecond, allClosed); err != nil {
		t.Errorf("flooding connections not all closed: %v", err)
	}
	after := mustProcMem(t, gw)
	for _, h := range conns {
		h.conn.Close()
	}
	wg.Wait()

	answers := map[string]int{}
	for _, h := range conns {
		status := "closed before the body was sent"
		if !h.ready.IsZero() {
			status, _, _ = strings.Cut(strings.TrimPrefix(strings.TrimSpace(h.answer), "HTTP/1.1 "), " ")
			if status == "" {
				status = "closed without an answer"
			}
		}
		answers[status]++
	}
	grew := held.RSS - base.RSS
	bound := int64(floodConns)*idleConnBound + 2*unverifiedBudget
	t.Logf("gateway RSS: %s before, %s with %d anonymous signed uploads of %d KiB sent (+%s; bound %s), peak %s, %s after; answers %v; a real device's requests during the flood: %s",
		mib(base.RSS), mib(held.RSS), floodConns, floodBody>>10, mib(grew), mib(bound), mib(after.HWM), mib(after.RSS), answers, formatTally(tally(rec.snapshot())))
	if grew > bound {
		t.Errorf("RSS grew by %s for %d anonymous uploads, want at most %s", mib(grew), floodConns, mib(bound))
	}
	if answers["503"] == 0 || answers["408"] == 0 {
		t.Errorf("answers %v: want 503 for the uploads beyond the budget, and 408 for those within it at their body timeout", answers)
	}
	for _, r := range rec.snapshot() {
		if r.kind != kindOK {
			t.Errorf("a real device during the flood: got %v, want its request served", r)
		}
	}
}

// forgedHead is a signed request's head that passes every check before the body — a known hmac
// device, a current timestamp, a fresh nonce — with a signature that is made up.
func forgedHead(device string) string {
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	m := &hmacauth.Message{Method: "PATCH", Path: "/api/v1/nodes/" + device + "/status", ContentType: "application/json",
		Timestamp: strconv.FormatInt(time.Now().Unix(), 10), Nonce: hex.EncodeToString(nonce[:])}
	return "PATCH " + m.Path + " HTTP/1.1\r\nHost: x\r\nAuthorization: " + hmacauth.Authorization(device, m, [32]byte{}) +
		"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(floodBody) + "\r\n\r\n"
}
