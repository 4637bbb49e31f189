package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/controlplane/controlplanetest"
	"github.com/picogate/picogate/internal/gateway"
	"github.com/picogate/picogate/internal/gatewaytest"
)

// heldRequest is a request whose head has been sent on its own connection; its body, if any, follows
// (or not) at the test's pace.
type heldRequest struct {
	conn net.Conn
	br   *bufio.Reader
	sent time.Time
}

// sendHead opens a connection from localIP ("" for 127.0.0.1) and sends a request head: the request
// line, Host, User-Agent ua, and the given header lines.
func sendHead(t testing.TB, addr, localIP, method, target, ua string, headers ...string) *heldRequest {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	head := method + " " + target + " HTTP/1.1\r\nHost: picogate\r\nUser-Agent: " + ua + "\r\n" + strings.Join(append(headers, ""), "\r\n") + "\r\n"
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatalf("sending the head: %v", err)
	}
	return &heldRequest{conn: c, br: bufio.NewReader(c), sent: time.Now()}
}

// trickle sends one body byte every interval until the connection breaks or stop is closed.
func (h *heldRequest) trickle(interval time.Duration, stop <-chan struct{}) {
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(interval):
				if _, err := h.conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
}

// answer reads the response head within timeout.
func (h *heldRequest) answer(t testing.TB, timeout time.Duration) *http.Response {
	t.Helper()
	_ = h.conn.SetReadDeadline(time.Now().Add(timeout))
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		t.Fatalf("no answer within %v: %v", timeout, err)
	}
	return resp
}

// closedAfter reports whether the gateway closes the connection once resp's body is read.
func (h *heldRequest) closedAfter(resp *http.Response, timeout time.Duration) bool {
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = h.conn.SetReadDeadline(time.Now().Add(timeout))
	_, err := h.br.ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// TestEveryPathHasADeadline: whatever the path — the gateway's own endpoints included — a request whose
// body is refused or never arrives is answered within the body timeout, and its connection closed, so
// nobody holds a connection by announcing a body and trickling it.
func TestEveryPathHasADeadline(t *testing.T) {
	const bodyTimeout = 2 * time.Second
	gw := startGateway(t, "--body-timeout", bodyTimeout.String())
	me := addDevice(t, "deadline-1")
	tests := []struct {
		name, method, target, length string
		headers                      []string
		want                         int
	}{
		{"time, body over the limit", "GET", "/picogate/v1/time", "200000", nil, 413},
		{"time, body trickled", "GET", "/picogate/v1/time", "1000", nil, 408},
		{"unknown endpoint, body trickled", "POST", "/picogate/v1/nothing", "1000", nil, 404},
		{"no credential, body trickled", "POST", "/api/v1/nodes", "1000", nil, 401},
		{"device, body trickled", "POST", "/api/v1/nodes", "1000", []string{"Authorization: Bearer " + me.Token}, 408},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := sendHead(t, gw.Addr, "", tt.method, tt.target, fmt.Sprintf("deadline-%02d", i),
				append(tt.headers, "Content-Type: application/json", "Content-Length: "+tt.length)...)
			stop := make(chan struct{})
			defer close(stop)
			h.trickle(200*time.Millisecond, stop)
			resp := h.answer(t, bodyTimeout+5*time.Second)
			took := time.Since(h.sent)
			if resp.StatusCode != tt.want {
				t.Errorf("got %d, want %d", resp.StatusCode, tt.want)
			}
			if !resp.Close || !h.closedAfter(resp, 3*time.Second) {
				t.Errorf("got the connection kept open (Connection: close %v), want it closed", resp.Close)
			}
			if took > bodyTimeout+2*time.Second {
				t.Errorf("answered after %v, want within the body timeout %v", took.Round(time.Millisecond), bodyTimeout)
			}
		})
	}
}

// limitsAudit is what these tests read of an audit event.
type limitsAudit struct {
	AuditID          string   `json:"auditID"`
	UserAgent        string   `json:"userAgent"`
	SourceIPs        []string `json:"sourceIPs"`
	RequestURI       string   `json:"requestURI"`
	ImpersonatedUser *struct {
		Username string   `json:"username"`
		Groups   []string `json:"groups"`
	} `json:"impersonatedUser"`
}

// auditedAs returns the audit events of requests sent with User-Agent ua.
func auditedAs(t testing.TB, ua string) []limitsAudit {
	t.Helper()
	return controlplanetest.ReadAudit(t, shared.AuditLog(), func(ev *limitsAudit) bool { return ev.UserAgent == ua })
}

// TestForwardingHeadersDoNotReachTheAuditLog: a device cannot choose its request's audit ID or the
// source addresses the API server's audit log records for it.
func TestForwardingHeadersDoNotReachTheAuditLog(t *testing.T) {
	gw := startGateway(t)
	me := addDevice(t, "fwd-1")
	waitAuthenticated(t, gw, me.Token)
	const ua, spoofedID, spoofedIP = "fwd-headers-probe", "0badc0de-0000-4000-8000-000000000001", "10.66.66.66"
	r := rawRequest(t, gw.Addr, "", "GET", "/api/v1/nodes/fwd-1", ua, []string{"Authorization: Bearer " + me.Token,
		"Audit-ID: " + spoofedID, "X-Real-IP: " + spoofedIP, "X-Forwarded-For: " + spoofedIP, "Forwarded: for=" + spoofedIP,
		"Via: 1.1 " + spoofedIP, "True-Client-IP: " + spoofedIP}, "")
	if r.code != 404 && r.code != 200 {
		t.Fatalf("got %d %s, want the request forwarded (200, or 404 without a Node)", r.code, trim(r.body))
	}
	evs := auditedAs(t, ua)
	if len(evs) == 0 {
		t.Fatal("the request is not in the audit log")
	}
	for _, ev := range evs {
		if ev.AuditID == spoofedID {
			t.Errorf("audit ID: got the device's %s, want the API server's own", ev.AuditID)
		}
		if slices.Contains(ev.SourceIPs, spoofedIP) {
			t.Errorf("sourceIPs: got %v, want no address the device claimed", ev.SourceIPs)
		}
	}
}

// TestDeviceWatchCap: a device may hold --max-device-watches watches at once; one more is refused with
// 429 and Retry-After, and a watch ended makes room.
func TestDeviceWatchCap(t *testing.T) {
	gw := startGateway(t, "--max-device-watches", "2")
	me := addDevice(t, "watchcap-1")
	waitAuthenticated(t, gw, me.Token)
	target := "/api/v1/pods?fieldSelector=spec.nodeName%3Dwatchcap-1&watch=1"
	open := func(i int) (*heldRequest, *http.Response) {
		h := sendHead(t, gw.Addr, "", "GET", target, fmt.Sprintf("watchcap-%02d", i), "Authorization: Bearer "+me.Token)
		return h, h.answer(t, 10*time.Second)
	}
	first, resp := open(0)
	if resp.StatusCode != 200 {
		t.Fatalf("first watch: got %d, want 200", resp.StatusCode)
	}
	if _, resp := open(1); resp.StatusCode != 200 {
		t.Fatalf("second watch: got %d, want 200", resp.StatusCode)
	}
	_, resp = open(2)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("third watch: got %d Retry-After=%q, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	first.conn.Close()
	if !gatewayWaitFor(10*time.Second, func() bool {
		h := sendHead(t, gw.Addr, "", "GET", target, "watchcap-again", "Authorization: Bearer "+me.Token)
		ok := h.answer(t, 10*time.Second).StatusCode == 200
		h.conn.Close()
		return ok
	}) {
		t.Error("after a watch ended: a new watch was still refused")
	}
}

// TestWatchTimeoutCapped: a watch asking for an hour (or for nothing, the API server's 30 to 60 minutes)
// is sent to the API server with --max-watch-timeout and ends then.
func TestWatchTimeoutCapped(t *testing.T) {
	gw := startGateway(t, "--max-watch-timeout", "3s")
	me := addDevice(t, "watchtimeout-1")
	waitAuthenticated(t, gw, me.Token)
	for i, target := range []string{
		"/api/v1/pods?fieldSelector=spec.nodeName%3Dwatchtimeout-1&watch=1&timeoutSeconds=3600",
		"/api/v1/pods?fieldSelector=spec.nodeName%3Dwatchtimeout-1&watch=1",
	} {
		ua := fmt.Sprintf("watchtimeout-%02d", i)
		h := sendHead(t, gw.Addr, "", "GET", target, ua, "Authorization: Bearer "+me.Token)
		resp := h.answer(t, 10*time.Second)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: got %d, want 200", target, resp.StatusCode)
		}
		_ = h.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.Copy(io.Discard, resp.Body)
		took := time.Since(h.sent)
		if err != nil || took < 2*time.Second || took > 10*time.Second {
			t.Errorf("%s: the watch ended after %v (%v), want cleanly after about 3s", target, took.Round(time.Millisecond), err)
		}
		for _, ev := range auditedAs(t, ua) {
			if !strings.Contains(ev.RequestURI, "timeoutSeconds=3&") && !strings.HasSuffix(ev.RequestURI, "timeoutSeconds=3") {
				t.Errorf("forwarded as %s, want timeoutSeconds=3", ev.RequestURI)
			}
		}
	}
}

// TestSharedIdentityIsNotTheGateways: with --shared-identity a request without a credential reaches the
// API server as the restricted user picogate:shared, never with the gateway's own credential; and a
// source address may have only --max-source-inflight such requests at once, while other addresses go on.
func TestSharedIdentityIsNotTheGateways(t *testing.T) {
	gw := startGateway(t, "--shared-identity", "--max-source-inflight", "2", "--body-timeout", "5s")
	const ua = "shared-identity-probe"
	if r := rawRequest(t, gw.Addr, "", "GET", "/version", ua, nil, ""); r.code != 200 {
		t.Fatalf("GET /version: got %d %s, want 200", r.code, trim(r.body))
	}
	evs := auditedAs(t, ua)
	if len(evs) == 0 {
		t.Fatal("the request is not in the audit log")
	}
	for _, ev := range evs {
		if ev.ImpersonatedUser == nil || ev.ImpersonatedUser.Username != gateway.SharedUser || !slices.Contains(ev.ImpersonatedUser.Groups, gateway.SharedGroup) {
			t.Errorf("impersonated: got %+v, want %s in group %s", ev.ImpersonatedUser, gateway.SharedUser, gateway.SharedGroup)
		}
	}
	stop := make(chan struct{})
	defer close(stop)
	for i := range 2 { // two slow uploads hold the source's two slots
		h := sendHead(t, gw.Addr, "127.0.0.41", "POST", "/api/v1/nodes", fmt.Sprintf("shared-slow-%d", i), "Content-Type: application/json", "Content-Length: 1000")
		h.trickle(200*time.Millisecond, stop)
	}
	// Both are in the gateway before the third is sent: sent sooner, it could take a slot from the second.
	if !gatewayWaitFor(4*time.Second, func() bool { return inFlight(gw) == 2 }) {
		t.Fatalf("the two slow uploads are not both in flight 4s after they began (gauge %v)", inFlight(gw))
	}
	if r := rawRequest(t, gw.Addr, "127.0.0.41", "GET", "/version", "shared-third", nil, ""); r.code != 429 || !strings.Contains(r.body, "in flight") {
		t.Errorf("a third request from the same source: got %d %s, want 429 while two are in flight", r.code, trim(r.body))
	}
	if r := rawRequest(t, gw.Addr, "127.0.0.42", "GET", "/version", "shared-other", nil, ""); r.code != 200 {
		t.Errorf("another source meanwhile: got %d %s, want 200", r.code, trim(r.body))
	}
}

// TestAnonymous401IsNobody: on a gateway without --shared-identity, a request without a credential is
// refused and logged as nobody's (identity "-"), not as the shared identity.
func TestAnonymous401IsNobody(t *testing.T) {
	gw := startGateway(t, "--log-format", "json")
	if r := rawRequest(t, gw.Addr, "", "GET", "/api/v1/nodes/anon-401-probe", "anon-401", nil, ""); r.code != 401 {
		t.Fatalf("got %d, want 401", r.code)
	}
	var found bool
	if !gatewayWaitFor(5*time.Second, func() bool {
		for line := range strings.SplitSeq(gw.Log(), "\n") {
			var l struct {
				Msg, Path, Identity string
				Status              int
			}
			if json.Unmarshal([]byte(line), &l) != nil || l.Msg != "request" || l.Path != "/api/v1/nodes/anon-401-probe" {
				continue
			}
			found = true
			if l.Status != 401 || l.Identity != "-" {
				t.Errorf("access log: got status %d identity %q, want 401 and -", l.Status, l.Identity)
			}
			return true
		}
		return false
	}) || !found {
		t.Error("no access-log line for the request")
	}
}

func gatewayWaitFor(timeout time.Duration, cond func() bool) bool {
	return gatewaytest.WaitFor(context.Background(), timeout, cond)
}
