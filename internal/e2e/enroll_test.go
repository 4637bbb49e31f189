package e2e

import (
	"context"
	"crypto/ecdh"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/picogate/picogate/internal/gatewaytest"
	"github.com/picogate/picogate/internal/registry"
)

// TestDeviceLifeHMAC is the whole life of a device: an enrollment token, enrollment (hmac), the firmware
// sequence with signed requests, a Lease, a device-initiated rotation (the old key valid until the new
// one is used), then `device remove`: Node and Lease gone, requests 401.
func TestDeviceLifeHMAC(t *testing.T) {
	gw := startEnrollmentGateway(t)
	tok := createToken(t, "--ttl", "10m", "--uses", "2", "--prefix", "life-")
	e := enroll(t, gw.Addr, tok.Token, "life-1", "E6614C311B5C6A2D", "hmac")
	if e.code != 201 || e.cred.Auth != "hmac" || len(e.cred.Key) != 64 || e.cred.Token != "" {
		t.Fatalf("enroll: got %d %+v %s, want 201 with a key agreed (keyConfirm checked)", e.code, e.cred, e.message)
	}
	t.Logf("enrollment answered in %v (token checked and spent, record created, visible to the gateway)", e.took.Round(time.Millisecond))
	s := newSigner(t, "life-1", e.cred.Key)
	signedFirmwareSequence(t, gw.Addr, s)
	// The Lease exists: the gateway's heartbeat translation may have created it already (409).
	if r := s.do(t, gw.Addr, "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", "application/json", leaseBody("life-1")); r.code != 201 && r.code != 409 {
		t.Fatalf("signed POST lease: got %d %s, want 201 (or 409: already there)", r.code, r.body)
	}

	// Rotation: a new key agreed; the old one keeps working until the new one is used.
	rot := rotateHMAC(t, gw.Addr, s)
	rotated := rot.cred
	if rot.code != 200 || len(rotated.Key) != 64 || rotated.Key == e.cred.Key {
		t.Fatalf("rotate: got %d %s, want 200 with a new key agreed", rot.code, rot.body)
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
	tok := createToken(t, "--ttl", "10m", "--prefix", "dereg-")
	e := enroll(t, gw.Addr, tok.Token, "dereg-1", "28:cd:c1:00:00:01", "token")
	if e.code != 201 || !strings.HasPrefix(e.cred.Token, "pgt_") || e.cred.Header != "Authorization: Bearer "+e.cred.Token {
		t.Fatalf("enroll: got %d %+v %s, want 201 with a token and its header", e.code, e.cred, e.message)
	}
	firmwareSequence(t, gw.Addr, "", "dereg-1", e.cred.Header)
	if r := firmwareDo(t, gw.Addr, "", "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", "application/json", leaseBody("dereg-1"), e.cred.Header); r.code != 201 && r.code != 409 {
		t.Fatalf("POST lease: got %d %s, want 201 (or 409: the heartbeat translation made it)", r.code, r.body)
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
	expiring := createToken(t, "--ttl", "1s", "--prefix", "ref-")
	once := createToken(t, "--uses", "1", "--prefix", "ref-")
	prefixed := createToken(t, "--uses", "5", "--prefix", "ref-")
	revoked := createToken(t, "--prefix", "ref-")
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
	// hmac without the board's ephemeral key is a 400: the key is agreed, never sent.
	r := firmwareDo(t, gw.Addr, "", "POST", "/picogate/v1/enroll", "application/json", enrollBody(prefixed.Token, "ref-noeph", "HW-K", "hmac", nil), "")
	if r.code != 400 || !strings.Contains(r.body, "ephemeralKey") {
		t.Errorf("hmac without ephemeralKey: got %d %s, want 400 naming it", r.code, r.body)
	}
	// An unknown body field is a clear 400.
	r = firmwareDo(t, gw.Addr, "", "POST", "/picogate/v1/enroll", "application/json", `{"token":"x","name":"a","hardwareId":"b","colour":"red"}`, "")
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

// TestReenrollAfterLostFlash: a board whose flash was wiped enrolls again with its name, its hardware
// id and a valid token. That is no proof (both are known to anyone on the LAN), so it waits for an
// operator's approval however the token approves, spending a use; its old credential keeps working
// meanwhile. Approved, the next poll gets the new credential and the old one stops.
func TestReenrollAfterLostFlash(t *testing.T) {
	gw := startEnrollmentGateway(t)
	tok := createToken(t, "--uses", "2", "--prefix", "flash-")
	first := enroll(t, gw.Addr, tok.Token, "flash-1", "RP2040-0001", "token")
	if first.code != 201 {
		t.Fatalf("enroll: got %d %s", first.code, first.message)
	}
	kx := newBoardKX(t) // the board keeps its ephemeral key while it polls
	for i := range 2 {
		e := enrollKX(t, gw.Addr, kx, tok.Token, "flash-1", "RP2040-0001", "hmac", "")
		if e.code != 202 || !strings.Contains(e.message, "picogate device approve flash-1") {
			t.Fatalf("re-enroll poll %d without proof: got %d %s, want 202 waiting for approval", i, e.code, e.message)
		}
	}
	if r := firmwareDo(t, gw.Addr, "", "GET", "/version", "", "", first.cred.Header); r.code != 200 {
		t.Errorf("current credential while the re-enrollment waits: got %d, want 200", r.code)
	}
	if out := picogate(t, "device", "list"); !strings.Contains(out, "re-enrollment waiting for approval") {
		t.Errorf("device list: got %q, want flash-1's re-enrollment waiting for approval", out)
	}
	picogate(t, "device", "approve", "flash-1")
	again := enrollKX(t, gw.Addr, kx, tok.Token, "flash-1", "RP2040-0001", "hmac", "")
	if again.code != 200 || again.cred.Auth != "hmac" || again.cred.Key == "" {
		t.Fatalf("poll after approval: got %d %+v %s, want 200 with a new (hmac) credential", again.code, again.cred, again.message)
	}
	if r := newSigner(t, "flash-1", again.cred.Key).do(t, gw.Addr, "GET", "/version", "", ""); r.code != 200 {
		t.Errorf("new credential: got %d, want 200", r.code)
	}
	if r := firmwareDo(t, gw.Addr, "", "GET", "/version", "", "", first.cred.Header); r.code != 401 {
		t.Errorf("lost credential after re-enrollment: got %d, want 401", r.code)
	}
	if e := enroll(t, gw.Addr, tok.Token, "flash-2", "RP2040-0002", "hmac"); e.code != 410 {
		t.Errorf("third enrollment on a two-use token (the waiting re-enrollment spent one): got %d %s, want 410", e.code, e.message)
	}
}

// TestManualApproval: a --approve manual token; the device polls with 202 and Retry-After until
// `device approve`, then gets its credential once.
func TestManualApproval(t *testing.T) {
	gw := startEnrollmentGateway(t)
	tok := createToken(t, "--approve", "manual", "--uses", "2", "--prefix", "manual-")
	kx := newBoardKX(t) // the board keeps its ephemeral key while it polls
	for i := range 2 {
		e := enrollKX(t, gw.Addr, kx, tok.Token, "manual-1", "HW-MANUAL", "hmac", "")
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
	e := enrollKX(t, gw.Addr, kx, tok.Token, "manual-1", "HW-MANUAL", "hmac", "")
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

// realNode creates a Node as a kubelet would (no device marker, unless marked), and its Lease owned by
// it; both are deleted at the end of the test.
func realNode(t *testing.T, name string, marked bool) *corev1.Node {
	t.Helper()
	cs := admin(cluster(t))
	ctx := context.Background()
	labels := map[string]string{"kubernetes.io/hostname": name}
	if marked {
		labels[registry.NodeMarkerLabel] = "true"
	}
	n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating node %s: %v", name, err)
	}
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-node-lease",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: name, UID: n.UID}}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &name}}
	if _, err := cs.CoordinationV1().Leases("kube-node-lease").Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating lease %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cs.CoordinationV1().Leases("kube-node-lease").Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return n
}

// nodeAndLeaseIntact reports whether n (same UID) and its Lease are still there.
func nodeAndLeaseIntact(t *testing.T, n *corev1.Node) bool {
	t.Helper()
	cs := admin(cluster(t))
	got, err := cs.CoreV1().Nodes().Get(context.Background(), n.Name, metav1.GetOptions{})
	_, lerr := cs.CoordinationV1().Leases("kube-node-lease").Get(context.Background(), n.Name, metav1.GetOptions{})
	return err == nil && got.UID == n.UID && lerr == nil
}

// TestEnrollCannotClaimRealNode (security finding: enrollment could claim the name of a Node picogate
// did not create, act as that node and then delete it). Every token has a name prefix; a name whose
// Node lacks the device marker is refused by enrollment and by `device add`; a real node that joins
// later under a device's name is never deleted by the device's deregistration, `device revoke
// --delete-node` or `device remove`; a device's own (marked) Node is.
func TestEnrollCannotClaimRealNode(t *testing.T) {
	gw := startEnrollmentGateway(t)

	t.Run("every token has a prefix", func(t *testing.T) {
		if tok := createToken(t); tok.Prefix != "pico-" {
			t.Errorf("token create without --prefix: got prefix %q, want pico-", tok.Prefix)
		}
		_, stderr, err := picogateResult(t, "token", "create", "--prefix", "")
		if err == nil || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "--prefix") {
			t.Errorf("token create --prefix '': got %v %q, want a one-line error about --prefix", err, stderr)
		}
	})

	t.Run("a token without a prefix is refused", func(t *testing.T) {
		old := createToken(t, "--prefix", "pico-")
		cs := admin(cluster(t))
		sec, err := cs.CoreV1().Secrets("picogate-system").Get(context.Background(), "enroll-"+old.ID, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sec.Data["name-prefix"] = nil // as an older picogate stored it
		if _, err := cs.CoreV1().Secrets("picogate-system").Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		e := enroll(t, gw.Addr, old.Token, "kube-worker-9", "HW-OLD", "token")
		if e.code != 403 || !strings.Contains(e.message, "no name prefix") || recordExists(t, "kube-worker-9") {
			t.Errorf("enrollment with a prefix-less token: got %d %q, want 403 saying it has no name prefix, and no record", e.code, e.message)
		}
	})

	t.Run("a real node's name is refused", func(t *testing.T) {
		real := realNode(t, "pico-real-1", false)
		tok := createToken(t, "--uses", "1")
		for _, auth := range []string{"token", "hmac"} {
			e := enroll(t, gw.Addr, tok.Token, "pico-real-1", "HW-REAL-"+auth, auth)
			if e.code != 409 || !strings.Contains(e.message, "real node") {
				t.Errorf("enrolling a real node's name (%s): got %d %q, want 409 naming it a real node", auth, e.code, e.message)
			}
		}
		if recordExists(t, "pico-real-1") || !nodeAndLeaseIntact(t, real) {
			t.Error("refused enrollment left a record or touched the node")
		}
		if e := enroll(t, gw.Addr, tok.Token, "pico-free-1", "HW-FREE", "token"); e.code != 201 {
			t.Errorf("the token's one use after the refusals: got %d %s, want 201 (a refusal spends no use)", e.code, e.message)
		}
		_, stderr, err := picogateResult(t, "device", "add", "pico-real-1")
		if err == nil || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "real node") || recordExists(t, "pico-real-1") {
			t.Errorf("device add of a real node's name: got %v %q, want a one-line refusal and no record", err, stderr)
		}
	})

	t.Run("deregistration leaves a real node that joined later alone", func(t *testing.T) {
		tok := createToken(t, "--uses", "1")
		e := enroll(t, gw.Addr, tok.Token, "pico-late-1", "HW-LATE", "token")
		if e.code != 201 {
			t.Fatalf("enroll: got %d %s", e.code, e.message)
		}
		real := realNode(t, "pico-late-1", false)
		r := firmwareDo(t, gw.Addr, "", "POST", "/picogate/v1/deregister", "", "", e.cred.Header)
		if r.code != 200 || !strings.Contains(r.body, "left alone") {
			t.Errorf("deregister: got %d %s, want 200 saying the node was left alone", r.code, r.body)
		}
		if !nodeAndLeaseIntact(t, real) || recordExists(t, "pico-late-1") {
			t.Error("after deregistration: want the real node and its lease intact and the record gone")
		}
	})

	t.Run("revoke --delete-node and remove leave a real node alone", func(t *testing.T) {
		addDevice(t, "pico-late-2")
		real := realNode(t, "pico-late-2", false)
		if out := picogate(t, "device", "revoke", "pico-late-2", "--delete-node"); !strings.Contains(out, "left alone") {
			t.Errorf("device revoke --delete-node: got %q, want it to say the node was left alone", out)
		}
		if out := picogate(t, "device", "remove", "pico-late-2"); !strings.Contains(out, "left alone") {
			t.Errorf("device remove: got %q, want it to say the node was left alone", out)
		}
		if !nodeAndLeaseIntact(t, real) || recordExists(t, "pico-late-2") {
			t.Error("after revoke and remove: want the real node and its lease intact and the record gone")
		}
	})

	t.Run("a device's own marked node is deleted", func(t *testing.T) {
		tok := createToken(t, "--uses", "1")
		e := enroll(t, gw.Addr, tok.Token, "pico-own-1", "HW-OWN", "token")
		if e.code != 201 {
			t.Fatalf("enroll: got %d %s", e.code, e.message)
		}
		realNode(t, "pico-own-1", true)
		r := firmwareDo(t, gw.Addr, "", "POST", "/picogate/v1/deregister", "", "", e.cred.Header)
		if r.code != 200 || !strings.Contains(r.body, "lease deleted") || !nodeAndLeaseGone(t, "pico-own-1") {
			t.Errorf("deregister with its own node: got %d %s, want 200 and node and lease gone", r.code, r.body)
		}
	})
}

// TestEnrollReenrollNeedsProof (security finding: re-enrollment takeover). A token and an enrolled
// board's name and hardware id (which travel in clear) no longer get a new credential: the request
// waits for an operator, and the board keeps working. The board itself re-enrolls at once by sending
// its current credential with the request; another device's credential is refused.
func TestEnrollReenrollNeedsProof(t *testing.T) {
	gw := startEnrollmentGateway(t)
	tok := createToken(t, "--uses", "10")
	board := enroll(t, gw.Addr, tok.Token, "pico-re-1", "HW-RE-1", "token")
	other := enroll(t, gw.Addr, tok.Token, "pico-re-2", "HW-RE-2", "token")
	if board.code != 201 || other.code != 201 {
		t.Fatalf("enroll: got %d and %d, want 201", board.code, other.code)
	}

	// The attacker: a valid token, the name and the hardware id.
	stolen := enroll(t, gw.Addr, tok.Token, "pico-re-1", "HW-RE-1", "token")
	if stolen.code != 202 || stolen.cred.Key != "" || stolen.cred.Token != "" {
		t.Errorf("re-enrollment without proof: got %d %s, want 202 and no credential", stolen.code, stolen.message)
	}
	if r := firmwareDo(t, gw.Addr, "", "GET", "/api/v1/nodes/pico-re-1", "", "", board.cred.Header); r.code == 401 {
		t.Error("the board after the attempted takeover: got 401, want its credential still accepted")
	}

	// Another device's credential proves nothing about this name.
	kx := newBoardKX(t)
	if e := enrollKX(t, gw.Addr, kx, tok.Token, "pico-re-1", "HW-RE-1", "hmac", other.cred.Header); e.code != 403 {
		t.Errorf("re-enrollment carrying another device's credential: got %d %s, want 403", e.code, e.message)
	}
	// A wrong credential is a 401, never an anonymous enrollment.
	if e := enrollKX(t, gw.Addr, kx, tok.Token, "pico-re-1", "HW-RE-1", "hmac", "Authorization: Bearer pgt_wrong"); e.code != 401 {
		t.Errorf("re-enrollment with a wrong credential: got %d %s, want 401", e.code, e.message)
	}

	// The board itself, with its current credential: at once, here moving to hmac mode.
	kx = newBoardKX(t)
	e := enrollKX(t, gw.Addr, kx, tok.Token, "pico-re-1", "HW-RE-1", "hmac", board.cred.Header)
	if e.code != 200 || len(e.cred.Key) != 64 {
		t.Fatalf("re-enrollment with the current credential: got %d %+v %s, want 200 with an agreed key", e.code, e.cred, e.message)
	}
	s := newSigner(t, "pico-re-1", e.cred.Key)
	if r := s.do(t, gw.Addr, "GET", "/version", "", ""); r.code != 200 {
		t.Errorf("the new key: got %d, want 200", r.code)
	}
	if !gatewaytest.WaitFor(context.Background(), 2*time.Second, func() bool {
		return firmwareDo(t, gw.Addr, "", "GET", "/version", "", "", board.cred.Header).code == 401
	}) {
		t.Error("the replaced bearer token still accepted 2s after the re-enrollment")
	}
	for line := range strings.SplitSeq(picogate(t, "device", "list"), "\n") {
		if strings.HasPrefix(line, "pico-re-1 ") && strings.Contains(line, "waiting for approval") {
			t.Errorf("device list: got %q, want the attacker's waiting request gone (replaced by the proven one)", line)
		}
	}

	// Signed with its key, an hmac device re-enrolls at once too.
	kx = newBoardKX(t)
	body := enrollBody(tok.Token, "pico-re-1", "HW-RE-1", "hmac", kx)
	r := s.do(t, gw.Addr, "POST", "/picogate/v1/enroll", "application/json", body)
	signed := enrollAnswer(t, r, kx, 0, func() ([]byte, []byte, error) { return kx.Enroll("pico-re-1", "HW-RE-1", tok.Token) })
	if signed.code != 200 || signed.cred.Key == e.cred.Key {
		t.Errorf("signed re-enrollment: got %d %s, want 200 with a new key", signed.code, signed.message)
	}
}

// TestEnrollKeyAgreement (security finding: hmac keys crossed the LAN in clear in the enroll and
// rotate answers). The gateway's static key is one Secret, printed by token create and token
// gateway-key; an hmac enrollment or rotation without the board's ephemeral key is a 400; the answers
// carry keyConfirm, never the key; the gateway never logs a key.
func TestEnrollKeyAgreement(t *testing.T) {
	gw := startEnrollmentGateway(t)
	var created struct{ Token, GatewayKey string }
	if err := json.Unmarshal([]byte(picogate(t, "token", "create", "--uses", "2", "-o", "json")), &created); err != nil {
		t.Fatal(err)
	}
	if shown := strings.TrimSpace(picogate(t, "token", "gateway-key")); len(shown) != 64 || shown != created.GatewayKey {
		t.Errorf("token gateway-key: got %q, want the key token create printed (%q)", shown, created.GatewayKey)
	}
	if out := picogate(t, "token", "create"); !strings.Contains(out, created.GatewayKey) {
		t.Errorf("token create: got %q, want the gateway key in it", out)
	}
	sec, err := admin(cluster(t)).CoreV1().Secrets("picogate-system").Get(context.Background(), "picogate-gateway-key", metav1.GetOptions{})
	if err != nil || len(sec.Data["x25519"]) != 32 {
		t.Fatalf("Secret picogate-gateway-key: %v, want 32 bytes in x25519", err)
	}
	if pub, _ := curve25519Public(sec.Data["x25519"]); hex.EncodeToString(pub) != created.GatewayKey {
		t.Errorf("printed gateway key %s is not the public half of the Secret's", created.GatewayKey)
	}

	r := firmwareDo(t, gw.Addr, "", "POST", "/picogate/v1/enroll", "application/json", enrollBody(created.Token, "pico-ka-1", "HW-KA", "hmac", nil), "")
	if r.code != 400 || !strings.Contains(r.body, "ephemeralKey") {
		t.Errorf("hmac enrollment without ephemeralKey: got %d %s, want 400", r.code, r.body)
	}
	e := enroll(t, gw.Addr, created.Token, "pico-ka-1", "HW-KA", "hmac") // checks keyConfirm, no key
	if e.code != 201 || strings.Contains(e.body, `"key"`) {
		t.Fatalf("hmac enrollment: got %d %s, want 201 with keyConfirm and no key", e.code, e.body)
	}
	s := newSigner(t, "pico-ka-1", e.cred.Key)
	if r := s.do(t, gw.Addr, "POST", "/picogate/v1/rotate", "", ""); r.code != 400 || !strings.Contains(r.body, "ephemeralKey") {
		t.Errorf("hmac rotation without ephemeralKey: got %d %s, want 400", r.code, r.body)
	}
	rot := rotateHMAC(t, gw.Addr, s) // checks keyConfirm, no key
	if rot.code != 200 || strings.Contains(rot.body, `"key"`) {
		t.Fatalf("hmac rotation: got %d %s, want 200 with keyConfirm and no key", rot.code, rot.body)
	}
	next := newSigner(t, "pico-ka-1", rot.cred.Key)
	if r := next.do(t, gw.Addr, "GET", "/version", "", ""); r.code != 200 {
		t.Errorf("the agreed next key: got %d %s, want 200", r.code, r.body)
	}
	// Rotating again, signed with the key just promoted: the transcript binds the key that signed.
	rot2 := rotateHMAC(t, gw.Addr, next)
	if rot2.code != 200 {
		t.Fatalf("second rotation: got %d %s", rot2.code, rot2.body)
	}
	if r := newSigner(t, "pico-ka-1", rot2.cred.Key).do(t, gw.Addr, "GET", "/version", "", ""); r.code != 200 {
		t.Errorf("the second agreed key: got %d, want 200", r.code)
	}
	for _, k := range []string{e.cred.Key, rot.cred.Key, rot2.cred.Key, hex.EncodeToString(sec.Data["x25519"])} {
		if strings.Contains(gw.Log(), k) {
			t.Error("the gateway's log holds a key")
		}
	}
}

// curve25519Public is the X25519 public key of a private key.
func curve25519Public(priv []byte) ([]byte, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return k.PublicKey().Bytes(), nil
}

// TestEnrollRateLimitPerSource (security finding: the enroll rate limit was global, so junk from one
// address locked real boards out). One address sending junk until it is refused does not stop a board
// enrolling from another address.
func TestEnrollRateLimitPerSource(t *testing.T) {
	gw := startEnrollmentGateway(t)
	tok := createToken(t, "--uses", "1")
	refused := 0
	for i := 0; i < 200 && refused < 3; i++ {
		if r := firmwareDo(t, gw.Addr, "127.0.0.1", "POST", "/picogate/v1/enroll", "application/json", `{}`, ""); r.code == 429 {
			refused++
		}
	}
	if refused < 3 {
		t.Fatal("200 junk enrollments from one address: never refused with 429")
	}
	if e := enrollFrom(t, gw.Addr, "127.0.0.2", tok.Token, "pico-src-1", "HW-SRC", "token"); e.code != 201 {
		t.Errorf("a board at another address right after the junk: got %d %s, want 201", e.code, e.message)
	}
}

// enrollFrom is enroll (token mode) from the source address localIP.
func enrollFrom(t *testing.T, addr, localIP, token, name, hw, auth string) enrolled {
	t.Helper()
	r := firmwareDo(t, addr, localIP, "POST", "/picogate/v1/enroll", "application/json", enrollBody(token, name, hw, auth, nil), "")
	return enrollAnswer(t, r, nil, 0, nil)
}

// TestEnrollIPDeviceDeregisterOperatorOnly (security finding: anyone sending from an ip-mode device's
// address could deregister it). The endpoint refuses ip-mode devices and points to device remove.
func TestEnrollIPDeviceDeregisterOperatorOnly(t *testing.T) {
	gw := startEnrollmentGateway(t)
	addDevice(t, "pico-ipdev-1", "--auth", "ip", "--ip", "127.0.0.3")
	var r firmwareResponse
	if !gatewaytest.WaitFor(context.Background(), 5*time.Second, func() bool {
		r = firmwareDo(t, gw.Addr, "127.0.0.3", "POST", "/picogate/v1/deregister", "", "", "")
		return r.code != 401
	}) {
		t.Fatal("ip-mode device not recognised within 5s")
	}
	if r.code != 403 || !strings.Contains(r.body, "picogate device remove pico-ipdev-1") {
		t.Errorf("deregister from the ip-mode device's address: got %d %s, want 403 pointing to picogate device remove", r.code, r.body)
	}
	if !recordExists(t, "pico-ipdev-1") {
		t.Error("the ip-mode device's record is gone")
	}
}
