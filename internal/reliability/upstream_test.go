package reliability

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/picogate/picogate/internal/gatewaytest"
)

// compactCap is the gateway's --compact-max-bytes in the misbehaving-upstream test (its default).
const compactCap = 256 << 10

// hugeBody is a valid JSON object of about n bytes, larger than any buffer the gateway keeps.
func hugeBody(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"huge","managedFields":[{"manager":"m"}]},"data":{"blob":"`)
	for b.Len() < n-3 {
		b.WriteString("0123456789abcdef")
	}
	b.WriteString(`"}}`)
	return b.Bytes()
}

// misbehaviour is one way the upstream answers badly, and what the device must get.
type misbehaviour struct {
	name  string
	watch bool
	serve func(w http.ResponseWriter, r *http.Request)
	body  []byte // what the upstream meant to send (for the checks)
	check func(t *testing.T, r result, sent []byte)
}

// brokenUpstream is a real TLS server that answers the requests of its cases the way the case says: a
// ConfigMap in namespace default named like the case, or a watch of the pods on the node named like it.
// It is the fault being injected, not a stand-in for Kubernetes: the gateway forwards to it exactly as
// to an API server, and every other request (the gateway's own views of device records and Nodes, which
// decide who a device is) goes on to the real API server, as the admin.
func brokenUpstream(t *testing.T, cases []misbehaviour) *httptest.Server {
	byName := map[string]misbehaviour{}
	for _, c := range cases {
		byName[c.name] = c
	}
	real := realAPIServer(t)
	const configMaps = "/api/v1/namespaces/default/configmaps/"
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutPrefix(r.URL.Path, configMaps)
		if r.URL.Path == "/api/v1/pods" && r.URL.Query().Get("watch") != "" {
			name, ok = strings.CutPrefix(r.URL.Query().Get("fieldSelector"), "spec.nodeName=")
		}
		if c, found := byName[name]; ok && found && c.watch == (r.URL.Path == "/api/v1/pods") {
			c.serve(w, r)
			return
		}
		real.ServeHTTP(w, r)
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// realAPIServer forwards a request to the package's API server with the admin's credential, the
// gateway's impersonation headers kept and its bearer token dropped.
func realAPIServer(t *testing.T) http.Handler {
	t.Helper()
	cfg := cluster(t).AdminConfig()
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Header.Del("Authorization")
		},
		Transport:     rt,
		FlushInterval: -1,
	}
}

// brokenKubeconfig points a kubeconfig at srv, trusting its certificate, with a bearer token.
func brokenKubeconfig(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "broken.kubeconfig")
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	cfg := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"broken": {Server: srv.URL, CertificateAuthorityData: ca}},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"broken": {Token: "not-a-real-credential"}},
		Contexts:       map[string]*clientcmdapi.Context{"broken": {Cluster: "broken", AuthInfo: "broken"}},
		CurrentContext: "broken",
	}
	if err := clientcmd.WriteToFile(cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeWith(ctype string, cl bool, chunks [][]byte) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ctype)
		if cl {
			n := 0
			for _, c := range chunks {
				n += len(c)
			}
			w.Header().Set("Content-Length", strconv.Itoa(n))
		}
		for _, c := range chunks {
			if _, err := w.Write(c); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}
}

// cutAfter sends the headers (with a Content-Length of all of body when cl) and the first n bytes of
// body, then drops the connection.
func cutAfter(ctype string, cl bool, body []byte, n int) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ctype)
		if cl {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		}
		_, _ = w.Write(body[:n])
		w.(http.Flusher).Flush()
		time.Sleep(50 * time.Millisecond)
		panic(http.ErrAbortHandler)
	}
}

// stallAfter sends the first n bytes of body (n < 0: not even the headers) and then nothing.
func stallAfter(body []byte, n int) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		if n >= 0 {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body[:n])
			w.(http.Flusher).Flush()
		}
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	}
}

func wantUntouched(t *testing.T, r result, sent []byte) {
	t.Helper()
	if r.kind != kindOK || !bytes.Equal(r.body, sent) {
		t.Errorf("got %v with %d bytes (sha %x), want 200 and the upstream's %d bytes untouched (sha %x)", r, len(r.body), sha(r.body), len(sent), sha(sent))
	}
}

// wantEvents: a watch whose events the gateway compacts until it meets something it cannot frame
// (not JSON, or an event over the cap); from there on the upstream's lines arrive untouched. Blank lines
// do not count: JSON watch framing ignores them.
func wantEvents(t *testing.T, r result, want []byte) {
	t.Helper()
	if got, wantLines := nonEmptyLines(r.body), nonEmptyLines(want); r.kind != kindOK || !slices.Equal(got, wantLines) {
		t.Errorf("got %v with lines %q, want the lines %q", r, trimLines(got), trimLines(wantLines))
	}
}

func nonEmptyLines(b []byte) []string {
	var out []string
	for l := range strings.SplitSeq(string(b), "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

func trimLines(ls []string) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		if len(l) > 80 {
			l = l[:80] + "…"
		}
		out[i] = l
	}
	return out
}

func wantCompacted(t *testing.T, r result, _ []byte) {
	t.Helper()
	if r.kind != kindOK || !json.Valid(r.body) || bytes.Contains(r.body, []byte("managedFields")) {
		t.Errorf("got %v (%d bytes), want valid JSON without managedFields", r, len(r.body))
	}
}

func wantClearError(code int, words string) func(t *testing.T, r result, _ []byte) {
	return func(t *testing.T, r result, _ []byte) {
		t.Helper()
		var s struct {
			Kind    string
			Message string
			Code    int
		}
		if r.kind != kindHTTP || r.code != code || json.Unmarshal(r.body, &s) != nil || s.Kind != "Status" || !strings.Contains(s.Message, words) {
			t.Errorf("got %v: %q, want %d with a Status saying %q", r, r.body, code, words)
		}
		if r.dur > maxDeviceWait {
			t.Errorf("answered after %v, want within %v", r.dur, maxDeviceWait)
		}
	}
}

// wantPrefix: a response the gateway was already streaming when the upstream broke is cut too, never
// completed with anything else: the device sees it incomplete, and what it got is the upstream's.
func wantPrefix(t *testing.T, r result, sent []byte) {
	t.Helper()
	if r.kind != kindTruncated || !bytes.HasPrefix(sent, r.body) {
		t.Errorf("got %v with %d bytes (a prefix of the upstream's: %v), want a visibly incomplete response carrying only the upstream's bytes", r, len(r.body), bytes.HasPrefix(sent, r.body))
	}
}

func sha(b []byte) []byte { s := sha256.Sum256(b); return s[:6] }

// TestMisbehavingUpstream points the gateway at a TLS server that answers with bodies that are not
// JSON, cut mid-body, stalled, or far larger than --compact-max-bytes, for plain requests and watches.
// The device gets a clear error, or the upstream's body untouched, never a corrupted one; the
// gateway's memory does not grow with the size of what passes through it.
func TestMisbehavingUpstream(t *testing.T) {
	const hugeSize = 64 << 20
	small := []byte(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","managedFields":[{"manager":"m"}]},"data":{"a":"b"}}`)
	mid := hugeBody(100 << 10) // under the cap: buffered for compaction
	big := hugeBody(2 * compactCap)
	huge := hugeBody(hugeSize)
	notJSON := []byte("<html><body><h1>502 Bad Gateway</h1>nginx</body></html>\n")
	event := func(name string) []byte {
		return fmt.Appendf(nil, `{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":%q,"managedFields":[{}]}}}`+"\n", name)
	}
	events := append(event("p1"), event("p2")...)
	bigEvent := fmt.Appendf(nil, `{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"big"},"data":%q}}`+"\n", strings.Repeat("x", 2*compactCap))
	cases := []misbehaviour{
		{name: "ok", serve: writeWith("application/json", true, [][]byte{small}), body: small, check: wantCompacted},
		{name: "not-json", serve: writeWith("application/json", true, [][]byte{notJSON}), body: notJSON, check: wantUntouched},
		{name: "not-json-chunked", serve: writeWith("application/json", false, [][]byte{notJSON[:10], notJSON[10:]}), body: notJSON, check: wantUntouched},
		{name: "invalid-json", serve: writeWith("application/json", true, [][]byte{small[:len(small)-1], []byte("]")}), body: append(bytes.Clone(small[:len(small)-1]), ']'), check: wantUntouched},
		{name: "truncated", serve: cutAfter("application/json", true, mid, len(mid)/2), body: mid, check: wantClearError(http.StatusBadGateway, "cut off")},
		{name: "truncated-chunked", serve: cutAfter("application/json", false, mid, len(mid)/2), body: mid, check: wantClearError(http.StatusBadGateway, "cut off")},
		{name: "truncated-over-cap", serve: cutAfter("application/json", true, big, len(big)*3/4), body: big, check: wantPrefix},
		{name: "truncated-chunked-over-cap", serve: cutAfter("application/json", false, big, len(big)*3/4), body: big, check: wantPrefix},
		{name: "stalled-headers", serve: stallAfter(nil, -1), check: wantClearError(http.StatusServiceUnavailable, "did not answer in time")},
		{name: "stalled-body", serve: stallAfter(mid, 1000), body: mid, check: wantClearError(http.StatusBadGateway, "cut off")},
		{name: "huge", serve: writeWith("application/json", true, [][]byte{huge}), body: huge, check: wantUntouched},
		{name: "huge-chunked", serve: writeWith("application/json", false, chunk(huge, 64<<10)), body: huge, check: wantUntouched},
		{name: "watch-garbage", watch: true, serve: writeWith("application/json", false, [][]byte{event("p1"), []byte("this is not json\n"), event("p2")}),
			body: slices.Concat(compactEvent("p1"), []byte("this is not json\n"), event("p2")), check: wantEvents},
		{name: "watch-cut", watch: true, serve: cutAfter("application/json", false, events, len(event("p1"))+20), body: events, check: func(t *testing.T, r result, _ []byte) {
			t.Helper()
			lines := strings.Split(strings.TrimSpace(string(r.body)), "\n")
			if r.kind != kindOK || len(lines) != 2 || lines[0] != strings.TrimSpace(string(compactEvent("p1"))) || !strings.HasPrefix(lines[1], `{"type":"ERROR","object":{"kind":"Status"`) {
				t.Errorf("got %v: %q, want the whole first event, then an ERROR event, then a clean end", r, r.body)
			}
		}},
		{name: "watch-huge-event", watch: true, serve: writeWith("application/json", false, [][]byte{event("p1"), bigEvent}), body: slices.Concat(compactEvent("p1"), bigEvent), check: wantEvents},
	}
	// The ConfigMap reads come without a credential (the shared identity); a watch of pods comes from
	// the device whose node the case is named after, since only a device may watch its pods.
	tokens := map[string]string{}
	for _, c := range cases {
		if c.watch {
			tokens[c.name] = addDevice(t, c.name).Token
			t.Cleanup(func() { picogateCLI(t, "device", "remove", c.name) })
		}
	}
	srv := brokenUpstream(t, cases)
	gw := gatewaytest.Start(t, gatewaytest.Options{Kubeconfig: brokenKubeconfig(t, srv), Args: []string{"--shared-identity", "--compact-max-bytes", strconv.Itoa(compactCap)}})
	before := mustProcMem(t, gw)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := "/api/v1/namespaces/default/configmaps/" + c.name
			if c.watch {
				path = "/api/v1/pods?fieldSelector=spec.nodeName%3D" + c.name + "&watch=1"
			}
			r := strictDo(gw.Addr, request{op: c.name, method: "GET", path: path, auth: tokens[c.name]}, 15*time.Second)
			c.check(t, r, c.body)
			t.Logf("%s: %s, %d bytes in %v", c.name, r.kind+" "+strconv.Itoa(r.code), len(r.body), r.dur.Round(time.Millisecond))
		})
	}
	after := mustProcMem(t, gw)
	t.Logf("gateway RSS %s before, peak %s after passing %s through twice (cap %s)", mib(before.RSS), mib(after.HWM), mib(hugeSize), mib(compactCap))
	// Two 64 MiB bodies went through; what the gateway holds stays a small multiple of its cap.
	if grew := after.HWM - before.HWM; grew > 8*compactCap+8<<20 {
		t.Errorf("peak RSS grew by %s passing %s bodies, want it bounded by the cap (%s)", mib(grew), mib(hugeSize), mib(compactCap))
	}
}

// compactEvent is event(name) as the gateway sends it: managedFields removed.
func compactEvent(name string) []byte {
	return fmt.Appendf(nil, `{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":%q}}}`+"\n", name)
}

func chunk(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}
