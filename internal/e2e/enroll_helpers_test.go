package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/picogate/picogate/device"
	"github.com/picogate/picogate/internal/gatewaytest"
	"github.com/picogate/picogate/internal/hmacauth"
)

// enrollUser is the identity the enrollment tests give the gateway: a client certificate, bound to the
// roles of deploy/rbac.yaml and deploy/rbac-enrollment.yaml exactly as those files bind the gateway's
// ServiceAccount, so the tests prove the two files are all --enrollment needs. The objects are applied
// under their own names and bound to this user, not to the ServiceAccount: other tests (picogate setup)
// check that the ServiceAccount holds rbac.yaml's rights and no more.
const enrollUser = "picogate-e2e-enroll"

var (
	saOnce       sync.Once
	saKubeconfig string
	saErr        error
)

// enrollmentKubeconfig returns a kubeconfig for enrollUser, applying the two manifests on first use.
func enrollmentKubeconfig(t testing.TB) string {
	t.Helper()
	c := cluster(t)
	saOnce.Do(func() {
		cs := admin(c)
		for _, f := range []string{"rbac.yaml", "rbac-enrollment.yaml"} {
			if saErr = applyManifest(cs, filepath.Join("..", "..", "deploy", f), "-e2e-enroll", enrollUser); saErr != nil {
				return
			}
		}
		cert, key, err := c.IssueClientCert("picogate-e2e-enroll", enrollUser)
		if err != nil {
			saErr = err
			return
		}
		dir, err := os.MkdirTemp("", "picogate-e2e-enroll-")
		if err != nil {
			saErr = err
			return
		}
		saKubeconfig = filepath.Join(dir, "kubeconfig")
		saErr = c.WriteKubeconfig(saKubeconfig, cert, key)
	})
	if saErr != nil {
		t.Fatalf("gateway identity: %v", saErr)
	}
	return saKubeconfig
}

// applyManifest creates the RBAC objects of a deploy/ manifest, each name with suffix, every binding of
// the gateway's ServiceAccount bound to user instead (Group subjects stay). The Namespace is created if
// missing; the ServiceAccount is not needed.
func applyManifest(cs kubernetes.Interface, file, suffix, user string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	ctx := context.Background()
	subjects := func(in []rbacv1.Subject) []rbacv1.Subject {
		var out []rbacv1.Subject
		for _, s := range in {
			if s.Kind == rbacv1.ServiceAccountKind {
				s = rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}
			}
			out = append(out, s)
		}
		return out
	}
	for doc := range strings.SplitSeq(string(b), "\n---\n") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		var err error
		switch meta.Kind {
		case "", "ServiceAccount":
			continue
		case "Namespace":
			var o corev1.Namespace
			if err = yaml.Unmarshal([]byte(doc), &o); err == nil {
				_, err = cs.CoreV1().Namespaces().Create(ctx, &o, metav1.CreateOptions{})
			}
		case "ClusterRole":
			var o rbacv1.ClusterRole
			if err = yaml.Unmarshal([]byte(doc), &o); err == nil {
				o.Name += suffix
				_, err = cs.RbacV1().ClusterRoles().Create(ctx, &o, metav1.CreateOptions{})
			}
		case "ClusterRoleBinding":
			var o rbacv1.ClusterRoleBinding
			if err = yaml.Unmarshal([]byte(doc), &o); err == nil {
				o.Name, o.RoleRef.Name, o.Subjects = o.Name+suffix, o.RoleRef.Name+suffix, subjects(o.Subjects)
				_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &o, metav1.CreateOptions{})
			}
		case "Role":
			var o rbacv1.Role
			if err = yaml.Unmarshal([]byte(doc), &o); err == nil {
				o.Name += suffix
				_, err = cs.RbacV1().Roles(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
			}
		case "RoleBinding":
			var o rbacv1.RoleBinding
			if err = yaml.Unmarshal([]byte(doc), &o); err == nil {
				o.Name, o.RoleRef.Name, o.Subjects = o.Name+suffix, o.RoleRef.Name+suffix, subjects(o.Subjects)
				_, err = cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
			}
		default:
			return fmt.Errorf("%s: unexpected kind %q", file, meta.Kind)
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("%s: creating %s: %w", file, meta.Kind, err)
		}
	}
	return nil
}

// startEnrollmentGateway runs picogate serve --enrollment as the gateway's least-privilege identity.
func startEnrollmentGateway(t testing.TB, args ...string) *gatewaytest.Gateway {
	t.Helper()
	return gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: enrollmentKubeconfig(t), Args: append([]string{"--enrollment"}, args...)})
}

// enrollToken is what `picogate token create -o json` prints.
type enrollToken struct {
	Token   string    `json:"token"`
	ID      string    `json:"id"`
	Expires time.Time `json:"expires"`
	Uses    int       `json:"uses"`
	Prefix  string    `json:"prefix"`
	Approve string    `json:"approve"`
}

func createToken(t testing.TB, args ...string) enrollToken {
	t.Helper()
	var tok enrollToken
	out := picogate(t, append([]string{"token", "create", "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &tok); err != nil {
		t.Fatalf("token create -o json: %v: %q", err, out)
	}
	if !strings.HasPrefix(tok.Token, "pge_"+tok.ID+".") {
		t.Fatalf("token create: got token %q for id %q, want pge_<id>.<secret>", tok.Token, tok.ID)
	}
	return tok
}

// enrolled is the answer to POST /picogate/v1/enroll.
type enrolled struct {
	code       int
	retryAfter string
	cred       credentialKey
	message    string
	reason     string
	took       time.Duration
	body       string
}

// credentialKey is a credential as the gateway returns it (device add -o json's fields plus key). An
// hmac key agreed by enroll or rotateHMAC is put in Key once its keyConfirm is checked.
type credentialKey struct {
	Name, Auth, Token, Key, Header, KeyConfirm string
}

var (
	gwKeyMu sync.Mutex
	gwKey   []byte
)

// gatewayPublicKey is the gateway key hmac firmware pins, as `picogate token gateway-key` prints it.
func gatewayPublicKey(t testing.TB) []byte {
	t.Helper()
	gwKeyMu.Lock()
	defer gwKeyMu.Unlock()
	if gwKey == nil {
		k, err := device.ParseGatewayKey(picogate(t, "token", "gateway-key"))
		if err != nil {
			t.Fatalf("token gateway-key: %v", err)
		}
		gwKey = k
	}
	return gwKey
}

// newBoardKX is a board's key exchange for one enrollment or rotation, against the pinned gateway key.
func newBoardKX(t testing.TB) *device.KeyExchange {
	t.Helper()
	kx, err := device.NewKeyExchange(gatewayPublicKey(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return kx
}

// enrollBody is an enrollment request; kx (hmac mode) adds its ephemeral key.
func enrollBody(token, name, hw, auth string, kx *device.KeyExchange) string {
	body := fmt.Sprintf(`{"token":%q,"name":%q,"hardwareId":%q,"auth":%q`, token, name, hw, auth)
	if kx != nil {
		body += fmt.Sprintf(`,"ephemeralKey":%q`, hex.EncodeToString(kx.PublicKey()))
	}
	return body + "}"
}

// enroll sends one enrollment as a board would: in hmac mode with a fresh ephemeral key.
func enroll(t testing.TB, addr, token, name, hw, auth string) enrolled {
	t.Helper()
	var kx *device.KeyExchange
	if auth == "hmac" {
		kx = newBoardKX(t)
	}
	return enrollKX(t, addr, kx, token, name, hw, auth, "")
}

// enrollKX sends one enrollment with the board's key exchange kx (nil in token mode; the same one for
// every poll of an enrollment waiting for approval) and an extra header line (a credential), and reads
// the answer: a Status, or a credential whose keyConfirm is checked and whose agreed key is put in Key.
func enrollKX(t testing.TB, addr string, kx *device.KeyExchange, token, name, hw, auth, header string) enrolled {
	t.Helper()
	start := time.Now()
	r := firmwareDo(t, addr, boardAddr(name), "POST", "/picogate/v1/enroll", "application/json", enrollBody(token, name, hw, auth, kx), header)
	return enrollAnswer(t, r, kx, time.Since(start), func() ([]byte, []byte, error) { return kx.Enroll(name, hw, token) })
}

// boardAddr is the loopback address board name enrolls from: each board its own, as on a LAN, so the
// gateway's per-source enrollment limit sees many boards, not one address.
func boardAddr(name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	n := h.Sum32()
	return fmt.Sprintf("127.1.%d.%d", n>>8%256, n%250+1)
}

// enrollAnswer reads an enrollment or rotation answer. For an hmac credential it checks that the key
// did not cross the LAN, derives it (derive) and compares the confirmation as a board does.
func enrollAnswer(t testing.TB, r firmwareResponse, kx *device.KeyExchange, took time.Duration, derive func() ([]byte, []byte, error)) enrolled {
	t.Helper()
	e := enrolled{code: r.code, retryAfter: r.headers["retry-after"], took: took, body: r.body}
	var st struct{ Message, Reason string }
	if r.code == 200 || r.code == 201 {
		if err := json.Unmarshal([]byte(r.body), &e.cred); err != nil {
			t.Fatalf("%d with body %q: %v", r.code, r.body, err)
		}
		if kx != nil {
			if e.cred.Key != "" || e.cred.KeyConfirm == "" {
				t.Fatalf("hmac answer: got %q, want keyConfirm and no key (the key must never cross the LAN)", r.body)
			}
			key, confirm, err := derive()
			if err != nil || hex.EncodeToString(confirm) != e.cred.KeyConfirm {
				t.Fatalf("hmac answer: keyConfirm %s does not match the board's own (%v)", e.cred.KeyConfirm, err)
			}
			e.cred.Key = hex.EncodeToString(key)
		}
	} else if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatalf("%d with a body that is not a Status: %q", r.code, r.body)
	}
	e.message, e.reason = st.Message, st.Reason
	return e
}

// rotateHMAC rotates an hmac device's key by key agreement, signed with its current key, and returns
// the answer (with the agreed key in cred.Key on 200).
func rotateHMAC(t testing.TB, addr string, s *signer) enrolled {
	t.Helper()
	kx := newBoardKX(t)
	body := fmt.Sprintf(`{"ephemeralKey":%q}`, hex.EncodeToString(kx.PublicKey()))
	start := time.Now()
	r := s.do(t, addr, "POST", "/picogate/v1/rotate", "application/json", body)
	return enrollAnswer(t, r, kx, time.Since(start), func() ([]byte, []byte, error) { return kx.Rotate(s.name, s.key) })
}

// signer signs firmware-style requests for one hmac device, as a firmware would: its own clock offset
// and a fresh random nonce per request.
type signer struct {
	name string
	key  []byte
	skew time.Duration
}

func newSigner(t testing.TB, name, keyHex string) *signer {
	t.Helper()
	k, err := hex.DecodeString(keyHex)
	if err != nil || len(k) != device.KeySize {
		t.Fatalf("device %s: key %q is not 64 hex digits", name, keyHex)
	}
	return &signer{name: name, key: k}
}

// header returns the Authorization header line for a request with target (path?query), signed now.
func (s *signer) header(method, target, ctype, body string) string {
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	return s.headerAt(method, target, ctype, body, time.Now().Add(s.skew).Unix(), hex.EncodeToString(nonce[:]))
}

func (s *signer) headerAt(method, target, ctype, body string, ts int64, nonce string) string {
	path, query, _ := strings.Cut(target, "?")
	m := &hmacauth.Message{Method: method, Path: path, Query: query, ContentType: ctype, Timestamp: strconv.FormatInt(ts, 10),
		Nonce: nonce, BodySHA256: sha256.Sum256([]byte(body))}
	return "Authorization: " + hmacauth.Authorization(s.name, m, hmacauth.Sign(s.key, m))
}

// do sends one signed firmware-style request.
func (s *signer) do(t testing.TB, addr, method, target, ctype, body string) firmwareResponse {
	t.Helper()
	return firmwareDo(t, addr, "", method, target, ctype, body, s.header(method, target, ctype, body))
}

// signedFirmwareSequence is firmwareSequence with every request signed: register the node, two status
// heartbeats, the fleet ConfigMap, the node itself, each fitting the firmware's buffer.
func signedFirmwareSequence(t *testing.T, addr string, s *signer) {
	t.Helper()
	node := firmwareNode(t, s.name, "127.0.0.1")
	if r := s.do(t, addr, "POST", "/api/v1/nodes", "application/json", node); r.code != 201 && r.code != 409 {
		t.Fatalf("signed POST node: got %d %s, want 201", r.code, r.body)
	}
	for i := range 2 {
		r := s.do(t, addr, "PATCH", "/api/v1/nodes/"+s.name+"/status", "application/strategic-merge-patch+json", firmwareHeartbeat("127.0.0.1"))
		if r.code != 200 {
			t.Fatalf("signed PATCH status %d: got %d %s, want 200", i, r.code, r.body)
		}
		checkFirmwareFits(t, "signed PATCH status", r)
	}
	if r := s.do(t, addr, "GET", "/api/v1/namespaces/default/configmaps/pico-config", "", ""); r.code != 200 || !strings.Contains(r.body, "memory_values") {
		t.Fatalf("signed GET configmap: got %d %s, want 200 with data.memory_values", r.code, r.body)
	}
	r := s.do(t, addr, "GET", "/api/v1/nodes/"+s.name, "", "")
	if r.code != 200 {
		t.Fatalf("signed GET node: got %d %s, want 200", r.code, r.body)
	}
	checkFirmwareFits(t, "signed GET node", r)
}

// leaseBody is a node Lease as a kubelet writes it.
func leaseBody(name string) string {
	return fmt.Sprintf(`{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":%q,"namespace":"kube-node-lease"},"spec":{"holderIdentity":%q,"leaseDurationSeconds":40}}`, name, name)
}

// nodeAndLeaseGone reports whether the admin sees neither the node nor its lease.
func nodeAndLeaseGone(t testing.TB, name string) bool {
	t.Helper()
	cs := admin(cluster(t))
	ctx := context.Background()
	_, nerr := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	_, lerr := cs.CoordinationV1().Leases("kube-node-lease").Get(ctx, name, metav1.GetOptions{})
	return apierrors.IsNotFound(nerr) && apierrors.IsNotFound(lerr)
}

func recordExists(t testing.TB, name string) bool {
	t.Helper()
	_, err := admin(cluster(t)).CoreV1().Secrets("picogate-system").Get(context.Background(), "device-"+name, metav1.GetOptions{})
	return err == nil
}

func decode(t testing.TB, s string, into any) error {
	t.Helper()
	if err := json.Unmarshal([]byte(s), into); err != nil {
		t.Errorf("decoding %q: %v", s, err)
		return err
	}
	return nil
}

// addHMACDevice registers an hmac device with the CLI and returns its credential (with the key).
func addHMACDevice(t testing.TB, name string, args ...string) credentialKey {
	t.Helper()
	var c credentialKey
	out := picogate(t, append([]string{"device", "add", name, "--auth", "hmac", "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &c); err != nil || c.Auth != "hmac" || len(c.Key) != 64 {
		t.Fatalf("device add --auth hmac -o json: got %q (%v), want an hmac credential with a key", out, err)
	}
	return c
}
