package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/gatewaytest"
)

// TestDeviceLifeHMAC is the whole life of a device: an enrollment token, enrollment (hmac), the firmware
// sequence with signed requests, a Lease, a device-initiated rotation (the old key valid until the new
// one is used), then `device remove`: Node and Lease gone, requests 401.
func TestDeviceLifeHMAC(t *testing.T) {
	gw := startEnrollmentGateway(t)
	tok := createToken(t, "--ttl", "10m", "--uses", "2", "--prefix", "life-")
	e := enroll(t, gw.Addr, tok.Token, "life-1", "E6614C311B5C6A2D", "hmac")
	if e.code != 201 || e.cred.Auth != "hmac" || len(e.cred.Key) != 64 || e.cred.Token != "" {
		t.Fatalf("enroll: got %d %+v %s, want 201 with a 64-hex-digit key", e.code, e.cred, e.message)
	}
	t.Logf("enrollment answered in %v (token checked and spent, record created, visible to the gateway)", e.took.Round(time.Millisecond))
	s := newSigner(t, "life-1", e.cred.Key)
	signedFirmwareSequence(t, gw.Addr, s)
	if r := s.do(t, gw.Addr, "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", "application/json", leaseBody("life-1")); r.code != 201 {
		t.Fatalf("signed POST lease: got %d %s, want 201", r.code, r.body)
	}

	// Rotation: the gateway answers with a new key; the old one keeps working until the new one is used.
	r := s.do(t, gw.Addr, "POST", "/picogate/v1/rotate", "", "")
	var rotated credentialKey
	if r.code != 200 || decode(t, r.body, &rotated) != nil || len(rotated.Key) != 64 || rotated.Key == e.cred.Key {
		t.Fatalf("rotate: got %d %s, want 200 with a new key", r.code, r.body)
	}
	if r := s.do(t, gw.Addr, "GET", "/api/v1/nodes/life-1", "", ""); r.code != 200 {
		t.Fatalf("old key right after rotate: got %d, want 200 (valid until the new key is used)", r.code)
	}
	next := newSigner(t, "life-1", rotated.Key)
	if r := next.do(t, gw.Addr, "GET", "/api/v1/nodes/life-1", "", ""); r.code != 200 {
		t.Fatalf("new key: got %d %s, want 200", r.code, r.body)
	}
	if !gatewaytest.WaitFor(context.Background(), 5*time.Second, func() bool {
		return s.do(t, gw.Addr, "GET", "/version", "", "").code == 401
	}) {
		t.Fatal("old key still accepted 5s after the new one was used")
	}
	if r := next.do(t, gw.Addr, "GET", "/api/v1/nodes/life-1", "", ""); r.code != 200 {
		t.Fatalf("new key after promotion: got %d, want 200", r.code)
	}

	picogate(t, "device", "remove", "life-1")
	if !nodeAndLeaseGone(t, "life-1") || recordExists(t, "life-1") {
		t.Error("after device remove: node, lease or record still there")
	}
	if !gatewaytest.WaitFor(context.Background(), 2*time.Second, func() bool {
		return next.do(t, gw.Addr, "GET", "/api/v1/nodes/life-1", "", "").code == 401
	}) {
		t.Error("removed device still accepted 2s after device remove")
	}
}

// TestDeviceLifeTokenDeregister: enrollment in token mode, operating with the bearer token, rotation,
// and the device deregistering itself.
func TestDeviceLifeTokenDeregister(t *testing.T) {
	gw := startEnrollmentGateway(t)
	tok := createToken(t, "--ttl", "10m")
	e := enroll(t, gw.Addr, tok.Token, "dereg-1", "28:cd:c1:00:00:01", "token")
	if e.code != 201 || !strings.HasPrefix(e.cred.Token, "pgt_") || e.cred.Header != "Authorization: Bearer "+e.cred.Token {
		t.Fatalf("enroll: got %d %+v %s, want 201 with a token and its header", e.code, e.cred, e.message)
	}
	firmwareSequence(t, gw.Addr, "", "dereg-1", e.cred.Header)
	if r := firmwareDo(t, gw.Addr, "", "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", "application/json", leaseBody("dereg-1"), e.cred.Header); r.code != 201 {
		t.Fatalf("POST lease: got %d %s", r.code, r.body)
	}
	r := firmwareDo(t, gw.Addr, "", "POST", "/picogate/v1/rotate", "", "", e.cred.Header)
	var rotated credentialKey
	if r.code != 200 || decode(t, r.body, &rotated) != nil || rotated.Token == e.cred.Token || rotated.Header == "" {
		t.Fatalf("rotate: got %d %s, want a new token", r.code, r.body)
	}
	if r := firmwareDo(t, gw.Addr, "", "GET", "/api/v1/nodes/dereg-1", "", "", rotated.Header); r.code != 200 {
		t.Fatalf("new token: got %d", r.code)
	}
	if !gatewaytest.WaitFor(context.Background(), 5*time.Second, func() bool {
		return firmwareDo(t, gw.Addr, "", "GET", "/version", "", "", e.cred.Header).code == 401
	}) {
		t.Fatal("old token still accepted 5s after the new one was used")
	}
	r = firmwareDo(t, gw.Addr, "", "POST", "/picogate/v1/deregister", "", "", rotated.Header)
	if r.code != 200 || !strings.Contains(r.body, `"status":"Success"`) {
		t.Fatalf("deregister: got %d %s, want 200 Success", r.code, r.body)
	}
	if !nodeAndLeaseGone(t, "dereg-1") || recordExists(t, "dereg-1") {
		t.Error("after deregister: node, lease or record still there")
	}
	if !gatewaytest.WaitFor(context.Background(), 2*time.Second, func() bool {
		return firmwareDo(t, gw.Addr, "", "GET", "/version", "", "", rotated.Header).code == 401
	}) {
		t.Error("deregistered device still accepted after 2s")
	}
}

// TestEnrollmentRefusals: every way an enrollment is refused, each with its status and reason.
func TestEnrollmentRefusals(t *testing.T) {
	gw := startEnrollmentGateway(t)
	expiring := createToken(t, "--ttl", "1s")
	once := createToken(t, "--uses", "1")
	prefixed := createToken(t, "--uses", "5", "--prefix", "ref-")
	revoked := createToken(t)
	picogate(t, "token", "revoke", revoked.ID)
	if e := enroll(t, gw.Addr, once.Token, "ref-once-1", "HW-A", "token"); e.code != 201 {
		t.Fatalf("first use of a one-use token: got %d %s, want 201", e.code, e.message)
	}
	if e := enroll(t, gw.Addr, prefixed.Token, "ref-owned", "HW-OWNER", "hmac"); e.code != 201 {
		t.Fatalf("setup: got %d %s", e.code, e.message)
	}
	time.Sleep(1100 * time.Millisecond) // expiring is past its TTL now
	forged := prefixed.Token[:len(prefixed.Token)-1] + map[bool]string{true: "b", false: "a"}[strings.HasSuffix(prefixed.Token, "a")]
	tests := []struct {
		name, token, devName, hw, auth string
		code                           int
		reason, msg                    string
	}{
		{"expired token", expiring.Token, "ref-exp-1", "HW-B", "hmac", 410, "Gone", "expired"},
		{"exhausted token", once.Token, "ref-once-2", "HW-C", "hmac", 410, "Gone", "no uses left"},
		{"revoked token", revoked.Token, "ref-rev-1", "HW-D", "hmac", 401, "Unauthorized", "unknown or revoked"},
		{"wrong secret", forged, "ref-forged", "HW-E", "hmac", 401, "Unauthorized", "unknown or revoked"},
		{"not a token", "pgt_nope", "ref-x", "HW-F", "hmac", 401, "Unauthorized", "unknown or revoked"},
		{"name outside the prefix", prefixed.Token, "other-1", "HW-G", "hmac", 403, "Forbidden", `starting with "ref-"`},
		{"name taken by another device", prefixed.Token, "ref-owned", "HW-INTRUDER", "hmac", 409, "Conflict", "belongs to another device"},
		{"name of a device added by the CLI", prefixed.Token, "ref-cli-1", "HW-H", "hmac", 409, "Conflict", "belongs to another device"},
		{"bad hardware id", prefixed.Token, "ref-hw", "has spaces", "hmac", 400, "BadRequest", "hardwareId"},
		{"bad name", prefixed.Token, "Ref_1", "HW-I", "hmac", 400, "BadRequest", "invalid device name"},
		{"bad auth", prefixed.Token, "ref-auth", "HW-J", "ip", 400, "BadRequest", "want token or hmac"},
	}
	addDevice(t, "ref-cli-1")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := enroll(t, gw.Addr, tt.token, tt.devName, tt.hw, tt.auth)
			if e.code != tt.code || e.reason != tt.reason || !strings.Contains(e.message, tt.msg) {
				t.Errorf("got %d %s %q, want %d %s mentioning %q", e.code, e.reason, e.message, tt.code, tt.reason, tt.msg)
			}
		})
	}
	// Nothing refused left a record.
	for _, n := range []string{"ref-exp-1", "ref-once-2", "ref-rev-1", "ref-forged", "other-1"} {
		if recordExists(t, n) {
			t.Errorf("refused enrollment of %s left a record", n)
		}
	}
	// An unknown body field is a clear 400.
	r := firmwareDo(t, gw.Addr, "", "POST", "/picogate/v1/enroll", "application/json", `{"token":"x","name":"a","hardwareId":"b","colour":"red"}`, "")
	if r.code != 400 || !strings.Contains(r.body, "colour") {
		t.Errorf("unknown field: got %d %s, want 400 naming it", r.code, r.body)
	}
	out := picogate(t, "token", "list")
	for _, want := range []string{expiring.ID, "expired", once.ID, "used up", "1/1", prefixed.ID, "ref-"} {
		if !strings.Contains(out, want) {
			t.Errorf("token list: got %q, want %q in it", out, want)
		}
	}
}

// TestReenrollAfterLostFlash: the same name with the same hardware id and a valid token gets a new
// credential (spending a use); the old credential stops working.
func TestReenrollAfterLostFlash(t *testing.T) {
	gw := startEnrollmentGateway(t)
	tok := createToken(t, "--uses", "2")
	first := enroll(t, gw.Addr, tok.Token, "flash-1", "RP2040-0001", "token")
	if first.code != 201 {
		t.Fatalf("enroll: got %d %s", first.code, first.message)
	}
	again := enroll(t, gw.Addr, tok.Token, "flash-1", "RP2040-0001", "hmac")
	if again.code != 200 || again.cred.Auth != "hmac" || again.cred.Key == "" {
		t.Fatalf("re-enroll: got %d %+v %s, want 200 with a new (hmac) credential", again.code, again.cred, again.message)
	}
	if r := newSigner(t, "flash-1", again.cred.Key).do(t, gw.Addr, "GET", "/version", "", ""); r.code != 200 {
		t.Errorf("new credential: got %d, want 200", r.code)
	}
	if r := firmwareDo(t, gw.Addr, "", "GET", "/version", "", "", first.cred.Header); r.code != 401 {
		t.Errorf("lost credential after re-enrollment: got %d, want 401", r.code)
	}
	if e := enroll(t, gw.Addr, tok.Token, "flash-1", "RP2040-0001", "hmac"); e.code != 410 {
		t.Errorf("third enrollment on a two-use token: got %d %s, want 410", e.code, e.message)
	}
}

// TestManualApproval: a --approve manual token; the device polls with 202 and Retry-After until
// `device approve`, then gets its credential once.
func TestManualApproval(t *testing.T) {
	gw := startEnrollmentGateway(t)
	tok := createToken(t, "--approve", "manual", "--uses", "2")
	for i := range 2 {
		e := enroll(t, gw.Addr, tok.Token, "manual-1", "HW-MANUAL", "hmac")
		if e.code != 202 || e.retryAfter == "" || e.reason != "PendingApproval" || !strings.Contains(e.message, "picogate device approve manual-1") {
			t.Fatalf("poll %d before approval: got %d (Retry-After %q) %s %q, want 202 with Retry-After", i, e.code, e.retryAfter, e.reason, e.message)
		}
	}
	if out := picogate(t, "device", "list"); !strings.Contains(out, "waiting for approval") || !strings.Contains(out, "HW-MANUAL") {
		t.Errorf("device list: got %q, want manual-1 waiting for approval with its hardware id", out)
	}
	if e := enroll(t, gw.Addr, tok.Token, "manual-1", "HW-OTHER", "hmac"); e.code != 409 {
		t.Errorf("another board polling for the name: got %d, want 409", e.code)
	}
	picogate(t, "device", "approve", "manual-1")
	e := enroll(t, gw.Addr, tok.Token, "manual-1", "HW-MANUAL", "hmac")
	if e.code != 200 || len(e.cred.Key) != 64 {
		t.Fatalf("poll after approval: got %d %+v %s, want 200 with the key", e.code, e.cred, e.message)
	}
	if r := newSigner(t, "manual-1", e.cred.Key).do(t, gw.Addr, "GET", "/version", "", ""); r.code != 200 {
		t.Errorf("approved device: got %d, want 200", r.code)
	}
	// Once: the same request again is a new (re-)enrollment, waiting for approval again; the device
	// keeps its credential meanwhile. The token's second use is spent by it.
	if e := enroll(t, gw.Addr, tok.Token, "manual-1", "HW-MANUAL", "hmac"); e.code != 202 || e.cred.Key != "" {
		t.Errorf("poll after collecting: got %d %s, want 202 and no credential (it is given once)", e.code, e.message)
	}
	if r := newSigner(t, "manual-1", e.cred.Key).do(t, gw.Addr, "GET", "/version", "", ""); r.code != 200 {
		t.Errorf("approved device during its re-enrollment: got %d, want 200", r.code)
	}
	if e := enroll(t, gw.Addr, tok.Token, "manual-2", "HW-MANUAL-2", "hmac"); e.code != 410 {
		t.Errorf("a third enrollment on the two-use token: got %d, want 410", e.code)
	}
}

// TestEnrollmentRaces: two boards asking for one name at once on two gateway replicas get exactly one
// 201; a token with N uses enrolls at most N of many boards racing for it.
func TestEnrollmentRaces(t *testing.T) {
	gws := []*gatewaytest.Gateway{startEnrollmentGateway(t), startEnrollmentGateway(t)}
	tok := createToken(t, "--uses", "100", "--prefix", "race-")
	for round := range 5 {
		name := "race-name-" + string(rune('a'+round))
		codes := raceEnroll(t, 2, func(i int) enrolled {
			return enroll(t, gws[i%2].Addr, tok.Token, name, "HW-RACER-"+string(rune('0'+i)), "hmac")
		})
		if codes[201] != 1 || codes[409] != 1 {
			t.Errorf("round %d: got %v, want exactly one 201 and one 409", round, codes)
		}
	}
	limited := createToken(t, "--uses", "3", "--prefix", "race-")
	codes := raceEnroll(t, 8, func(i int) enrolled {
		return enroll(t, gws[i%2].Addr, limited.Token, "race-uses-"+string(rune('a'+i)), "HW-"+string(rune('a'+i)), "token")
	})
	if codes[201] != 3 || codes[410] != 5 {
		t.Errorf("8 boards on a 3-use token: got %v, want three 201 and five 410", codes)
	}
}

// raceEnroll runs n enrollments released at the same moment and counts their status codes.
func raceEnroll(t *testing.T, n int, do func(i int) enrolled) map[int]int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			e := do(i)
			mu.Lock()
			codes[e.code]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return codes
}

// TestRemovedWhileWatching: `device remove` of a device with an open watch ends the watch, and every
// further request is 401.
func TestRemovedWhileWatching(t *testing.T) {
	gw := startGateway(t)
	s := newSigner(t, "watch-rm-1", addHMACDevice(t, "watch-rm-1").Key)
	if !gatewaytest.WaitFor(context.Background(), 5*time.Second, func() bool { return s.do(t, gw.Addr, "GET", "/version", "", "").code == 200 }) {
		t.Fatal("hmac device not accepted within 5s")
	}
	if r := s.do(t, gw.Addr, "POST", "/api/v1/nodes", "application/json", firmwareNode(t, "watch-rm-1", "127.0.0.1")); r.code != 201 {
		t.Fatalf("POST node: got %d %s", r.code, r.body)
	}
	target := "/api/v1/pods?fieldSelector=spec.nodeName%3Dwatch-rm-1&watch=1"
	req, _ := http.NewRequest("GET", gw.URL()+target, nil)
	req.Header.Set("Authorization", strings.TrimPrefix(s.header("GET", target, "", ""), "Authorization: "))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("signed watch: %v %v", err, resp)
	}
	defer resp.Body.Close()
	ended := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := resp.Body.Read(buf); err != nil {
				close(ended)
				return
			}
		}
	}()
	removed := time.Now()
	picogate(t, "device", "remove", "watch-rm-1")
	select {
	case <-ended:
		t.Logf("watch ended %v after device remove was started", time.Since(removed).Round(time.Millisecond))
	case <-time.After(2 * time.Second):
		t.Error("the removed device's watch was still open 2s after device remove")
	}
	if r := s.do(t, gw.Addr, "GET", "/api/v1/nodes/watch-rm-1", "", ""); r.code != 401 {
		t.Errorf("request after remove: got %d, want 401", r.code)
	}
	if !nodeAndLeaseGone(t, "watch-rm-1") {
		t.Error("node still there after device remove")
	}
}

// TestEnrollmentLatency enrolls 20 boards one after another and uses each credential at once: the
// gateway answers only once its own registry accepts the credential, so the first request never meets
// a 401. The times are logged (no speed assertion).
func TestEnrollmentLatency(t *testing.T) {
	gw := startEnrollmentGateway(t)
	tok := createToken(t, "--uses", "20", "--prefix", "lat-")
	var took []time.Duration
	for i := range 20 {
		name := fmt.Sprintf("lat-%02d", i)
		e := enroll(t, gw.Addr, tok.Token, name, "HW-LAT-"+strconv.Itoa(i), "hmac")
		if e.code != 201 {
			t.Fatalf("%s: got %d %s, want 201", name, e.code, e.message)
		}
		took = append(took, e.took)
		if r := newSigner(t, name, e.cred.Key).do(t, gw.Addr, "GET", "/version", "", ""); r.code != 200 {
			t.Errorf("%s: first request right after enrolling: got %d, want 200", name, r.code)
		}
	}
	slices.Sort(took)
	t.Logf("enrollment (request to credential, 20 boards in turn): median %v, fastest %v, slowest %v",
		took[len(took)/2].Round(100*time.Microsecond), took[0].Round(100*time.Microsecond), took[len(took)-1].Round(100*time.Microsecond))
}
