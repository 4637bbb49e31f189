package dashboard

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/picogate/picogate/internal/registry"
)

func get(t *testing.T, h http.Handler, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
	return rec
}

func TestRoutesAndHeaders(t *testing.T) {
	clk := &clock{t: time.Now()}
	d := newTestDashboard(t, newMemRegistry(tokenDevice("pico-1")), clk)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	d.Register(mux)
	for _, tc := range []struct {
		target, ctype string
		code          int
	}{
		{"/", "text/html; charset=utf-8", 200},
		{"/dashboard/assets/app.js", "text/javascript; charset=utf-8", 200},
		{"/dashboard/assets/app.css", "text/css; charset=utf-8", 200},
		{"/dashboard/api/fleet", "application/json", 200},
		{"/dashboard/api/device/pico-1", "application/json", 200},
		{"/dashboard/api/anonymous", "application/json", 200},
		{"/dashboard/api/charts", "application/json", 200},
		{"/dashboard/api/device/nope", "", 404},
		{"/dashboard/assets/nope.js", "", 404},
		{"/dashboard/assets/..%2fdashboard.go", "", 404},
		{"/healthz", "", 200},
		{"/other", "", 404},
	} {
		t.Run(tc.target, func(t *testing.T) {
			rec := get(t, mux, tc.target)
			if rec.Code != tc.code {
				t.Fatalf("got %d, want %d", rec.Code, tc.code)
			}
			if tc.ctype != "" && rec.Header().Get("Content-Type") != tc.ctype {
				t.Errorf("content type: got %q, want %q", rec.Header().Get("Content-Type"), tc.ctype)
			}
			if tc.target == "/healthz" || tc.target == "/other" {
				return
			}
			csp := rec.Header().Get("Content-Security-Policy")
			for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("CSP %q lacks %q", csp, want)
				}
			}
			if strings.Contains(csp, "unsafe") {
				t.Errorf("CSP %q allows unsafe sources", csp)
			}
			if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options: got %q, want nosniff", got)
			}
		})
	}
}

// TestPageHasNoInlineCode: the CSP forbids inline script and style, so the page must not need any.
func TestPageHasNoInlineCode(t *testing.T) {
	page, err := assets.ReadFile("assets/index.html")
	if err != nil {
		t.Fatal(err)
	}
	html := string(page)
	for _, m := range regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`).FindAllStringSubmatch(html, -1) {
		if !strings.Contains(m[1], "src=") || strings.TrimSpace(m[2]) != "" {
			t.Errorf("inline script: %q", m[0])
		}
	}
	for _, bad := range []string{"<style", " style=", " onclick=", " onload=", " onerror=", "javascript:", "http://", "https://"} {
		if strings.Contains(strings.ToLower(html), bad) {
			t.Errorf("index.html contains %q", bad)
		}
	}
	js, _ := assets.ReadFile("assets/app.js")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "http://", "https://"} {
		if strings.Contains(string(js), bad) {
			t.Errorf("app.js uses %q", bad)
		}
	}
}

func TestHostileStringsStayText(t *testing.T) {
	long := strings.Repeat("A", 10000) + "<script>"
	for _, tc := range []struct {
		name, ua, path, reason string
	}{
		{"script", "<script>alert(1)</script>", "/api/v1/nodes/<script>alert(1)</script>", "</td><script>alert(2)</script>"},
		{"quotes", `"'><img src=x onerror=alert(1)>`, `/a"b'c`, `it's "quoted" & <b>bold</b>`},
		{"very long", long, "/" + long, long},
		{"invalid utf-8", "pico\xff\xfe<", "/\xc3", "bad \xe2\x82"},
		{"line separators", "a\u2028b\u2029c\r\nd", "/x\ny", "r\x00s"},
		{"multibyte cut", strings.Repeat("é", 200), "/" + strings.Repeat("€", 100), strings.Repeat("😀", 100)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := &clock{t: time.Now()}
			d := newTestDashboard(t, newMemRegistry(tokenDevice("pico-1")), clk)
			e := ev("pico-1", clk.now(), 403)
			e.UserAgent, e.Path, e.Reason = tc.ua, tc.path, tc.reason
			d.Record(e)
			h := d.Handler()
			for _, target := range []string{"/dashboard/api/fleet", "/dashboard/api/device/pico-1"} {
				rec := get(t, h, target)
				body := rec.Body.String()
				if strings.ContainsAny(body, "<>") {
					t.Errorf("%s: a raw < or > in the JSON: %.200s", target, body)
				}
				if !utf8.ValidString(body) {
					t.Errorf("%s: invalid UTF-8 in the JSON", target)
				}
			}
			var v DeviceView
			if err := json.Unmarshal(get(t, h, "/dashboard/api/device/pico-1").Body.Bytes(), &v); err != nil {
				t.Fatal(err)
			}
			checkBounded(t, "user agent", v.Row.UserAgent, tc.ua, uaBytes)
			checkBounded(t, "path", v.Requests[0].Path, tc.path, pathBytes)
			checkBounded(t, "reason", v.Refusals[0].Reason, tc.reason, reasonBytes)
		})
	}
}

// checkBounded: got is want, or want's first bytes (at most max, on a character boundary) and "…".
func checkBounded(t *testing.T, what, got, want string, max int) {
	t.Helper()
	if len(want) <= max && utf8.ValidString(want) {
		if got != want {
			t.Errorf("%s: got %q, want %q", what, got, want)
		}
		return
	}
	if len(want) <= max {
		return // invalid UTF-8 is replaced by the JSON encoder
	}
	cut := strings.TrimSuffix(got, "…")
	if cut == got || len(cut) > max || !strings.HasPrefix(want, cut) || !utf8.ValidString(cut) {
		t.Errorf("%s: got %q (%d bytes), want a prefix of at most %d bytes of the original and …", what, got, len(got), max)
	}
}

// TestNoCredentialOnThePage: a device's token hash, next token hash and hmac keys never reach any
// response, and a token a device puts into its path or user agent is cut.
func TestNoCredentialOnThePage(t *testing.T) {
	clk := &clock{t: time.Now()}
	tokDev := tokenDevice("pico-1")
	tokDev.NextTokenHash = sha256.Sum256([]byte("pgt_next"))
	key := []byte("0123456789abcdef0123456789abcdef")
	next := []byte("fedcba9876543210fedcba9876543210")
	hmacDev := &registry.Device{Name: "pico-2", Auth: registry.AuthHMAC, Key: key, NextKey: next, Created: clk.now()}
	pending := &registry.Device{Name: "pico-3", Auth: registry.AuthToken, Enrollment: &registry.Enrollment{Requested: clk.now(), TokenHash: sha256.Sum256([]byte("pgt_enroll"))}}
	d := newTestDashboard(t, newMemRegistry(tokDev, hmacDev, pending), clk)
	const token = "pgt_Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdo"
	for _, name := range []string{"pico-1", "pico-2", ""} {
		e := ev(name, clk.now(), 401)
		e.Path = "/api/v1/nodes/" + token
		e.UserAgent = "fw " + token + " end"
		e.Reason = "authentication failed: unknown " + token
		d.Record(e)
	}
	var secrets []string
	for _, b := range [][]byte{tokDev.TokenHash[:], tokDev.NextTokenHash[:], key, next, pending.Enrollment.TokenHash[:]} {
		secrets = append(secrets, hex.EncodeToString(b), base64.StdEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b), string(b))
	}
	secrets = append(secrets, token, token[len("pgt_"):len("pgt_")+8])
	h := d.Handler()
	for _, target := range []string{"/", "/dashboard/api/fleet", "/dashboard/api/device/pico-1", "/dashboard/api/device/pico-2",
		"/dashboard/api/device/pico-3", "/dashboard/api/anonymous", "/dashboard/api/charts"} {
		body := get(t, h, target).Body.String()
		for _, s := range secrets {
			if strings.Contains(body, s) {
				t.Errorf("%s reveals %q", target, s)
			}
		}
	}
	var v DeviceView
	_ = json.Unmarshal(get(t, h, "/dashboard/api/device/pico-1").Body.Bytes(), &v)
	if got, want := v.Row.UserAgent, "fw pgt_… end"; got != want {
		t.Errorf("user agent: got %q, want %q", got, want)
	}
}

func TestFleetQuery(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	reg := newMemRegistry()
	for i := range 30 {
		dev := tokenDevice(fmt.Sprintf("pico-%02d", i))
		if i%10 == 3 {
			dev.Revoked = clk.now()
		}
		reg.set(dev)
	}
	reg.set(tokenDevice("other-1"))
	d := newTestDashboard(t, reg, clk)
	for i := range 30 {
		name := fmt.Sprintf("pico-%02d", i)
		for j := range i % 5 {
			d.Record(ev(name, clk.now().Add(-time.Duration(i)*time.Minute+time.Duration(j)*time.Millisecond), 200))
		}
		if i%7 == 0 {
			r := ev(name, clk.now().Add(-time.Duration(i)*time.Minute), 403)
			r.Reason = "no"
			d.Record(r)
		}
	}
	for _, tc := range []struct {
		query     string
		wantNames []string // nil: only count
		matched   int
	}{
		{"", nil, 31},
		{"prefix=pico-1&limit=3", []string{"pico-10", "pico-11", "pico-12"}, 10},
		{"prefix=pico-1&limit=3&offset=9", []string{"pico-19"}, 10},
		{"status=revoked", []string{"pico-03", "pico-13", "pico-23"}, 3},
		{"status=refused", []string{"pico-00", "pico-07", "pico-14", "pico-21", "pico-28"}, 5},
		// Seen more than 20 minutes ago (21…29 but 25), or never (5, 10, 15, 20, 25).
		{"quiet=20&prefix=pico", []string{"pico-05", "pico-10", "pico-15", "pico-20", "pico-21", "pico-22", "pico-23", "pico-24", "pico-25", "pico-26", "pico-27", "pico-28", "pico-29"}, 13},
		{"sort=seen&desc=1&limit=2", []string{"pico-00", "pico-01"}, 31},
		{"prefix=zzz", []string{}, 0},
	} {
		t.Run(tc.query, func(t *testing.T) {
			var p Page
			if err := json.Unmarshal(get(t, d.Handler(), "/dashboard/api/fleet?"+tc.query).Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range p.Rows {
				names = append(names, r.Name)
			}
			if tc.wantNames != nil && strings.Join(names, ",") != strings.Join(tc.wantNames, ",") {
				t.Errorf("got %v, want %v", names, tc.wantNames)
			}
			if p.Matched != tc.matched {
				t.Errorf("matched: got %d, want %d", p.Matched, tc.matched)
			}
			if p.Summary.Devices != 31 || p.Summary.Revoked != 3 {
				t.Errorf("summary: got %+v, want 31 devices, 3 revoked", p.Summary)
			}
		})
	}
}

// readEvent reads one server-sent event's data.
func readEvent(t *testing.T, r *bufio.Reader) Delta {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var dl Delta
			if err := json.Unmarshal([]byte(data), &dl); err != nil {
				t.Fatal(err)
			}
			return dl
		}
	}
}

func TestStreamSendsOnlyChanges(t *testing.T) {
	clk := &clock{t: time.Now()}
	reg := newMemRegistry()
	for i := range 50 {
		reg.set(tokenDevice(fmt.Sprintf("pico-%02d", i)))
	}
	d := newTestDashboard(t, reg, clk)
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/dashboard/api/stream?limit=20")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if got := res.Header.Get("Content-Type"); got != "text/event-stream" {
		t.Fatalf("content type: got %q", got)
	}
	r := bufio.NewReader(res.Body)
	first := readEvent(t, r)
	if !first.Full || len(first.Rows) != 20 || len(first.Order) != 20 || first.Matched != 50 {
		t.Fatalf("first message: got full=%v %d rows, %d names, matched %d; want the whole page of 20 of 50", first.Full, len(first.Rows), len(first.Order), first.Matched)
	}

	d.Record(ev("pico-03", clk.now(), 200))
	d.Record(ev("pico-40", clk.now(), 200)) // not on the page
	clk.add(time.Second)
	dl := readEvent(t, r)
	if dl.Full || len(dl.Rows) != 1 || dl.Rows[0].Name != "pico-03" || dl.Rows[0].Requests != 1 || dl.Order != nil {
		t.Errorf("after one request: got full=%v rows=%+v order=%v; want only pico-03's row", dl.Full, dl.Rows, dl.Order)
	}

	rev := tokenDevice("pico-05")
	rev.Revoked = clk.now()
	reg.set(rev)
	clk.add(time.Second)
	dl = readEvent(t, r)
	if len(dl.Rows) != 1 || dl.Rows[0].Name != "pico-05" || dl.Rows[0].Status != "revoked" || dl.Summary.Revoked != 1 {
		t.Errorf("after a revocation: got rows=%+v summary=%+v; want pico-05 revoked", dl.Rows, dl.Summary)
	}
}

func TestStreamLimit(t *testing.T) {
	clk := &clock{t: time.Now()}
	d, err := New(Config{Registry: newMemRegistry(), Now: clk.now, MaxStreams: 1})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/dashboard/api/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	readEvent(t, bufio.NewReader(res.Body))
	res2, err := http.Get(srv.URL + "/dashboard/api/stream")
	if err != nil {
		t.Fatal(err)
	}
	res2.Body.Close()
	if res2.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("second stream: got %d, want 503", res2.StatusCode)
	}
}
