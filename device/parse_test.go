package device

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The files under testdata/api/ are real answers of kube-apiserver v1.37.2
// to the agent's requests (record_test.go made them). Expected values come
// from decoding the same file with encoding/json, so re-recording (new uids,
// times) keeps these tests valid.

func readAPI(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "api", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeMap(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func field(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func TestParseRecordedNode(t *testing.T) {
	for _, name := range []string{"node-create.json", "node-labels-patch.json", "node-get.json", "node-status-full.json"} {
		t.Run(name, func(t *testing.T) {
			b := readAPI(t, name)
			m := decodeMap(t, b)
			v, err := parseJSON(b)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := v.get("metadata", "uid").strOr(""), field(m, "metadata", "uid"); got != want || got == "" {
				t.Errorf("uid: got %q, want %v", got, want)
			}
			if !hasMCUTaint(v) {
				t.Errorf("hasMCUTaint: got false, want true")
			}
			st := &nodeStatus{conds: newConditions(t0)}
			st.adoptTransitions(v)
			var want string
			for _, c := range field(m, "status", "conditions").([]any) {
				if c := c.(map[string]any); c["type"] == "Ready" {
					want = c["lastTransitionTime"].(string)
				}
			}
			if got := st.conds[0].transition.Format(time.RFC3339); got != want {
				t.Errorf("Ready lastTransitionTime: got %s, want %s", got, want)
			}
		})
	}
}

func TestNodeWithoutTaint(t *testing.T) {
	v, _ := parseJSON([]byte(`{"spec":{"taints":[{"key":"other","effect":"NoSchedule"}]}}`))
	if hasMCUTaint(v) {
		t.Error("got true, want false")
	}
}

func TestAdoptTransitionsKeepsOwnWhenStatusDiffers(t *testing.T) {
	v, _ := parseJSON([]byte(`{"status":{"conditions":[{"type":"Ready","status":"Unknown","lastTransitionTime":"2020-01-01T00:00:00Z"}]}}`))
	st := &nodeStatus{conds: newConditions(t0)}
	st.adoptTransitions(v)
	if !st.conds[0].transition.Equal(t0) {
		t.Errorf("got %s, want %s: Unknown -> True is a transition", st.conds[0].transition, t0)
	}
}

func TestParseRecordedErrors(t *testing.T) {
	tests := []struct {
		file       string
		code       int
		reason     string
		msgContain string
	}{
		{"node-create-conflict.json", 409, "AlreadyExists", `"pico-1" already exists`},
		{"node-other-forbidden.json", 403, "Forbidden", `not allowed to modify node "pico-2"`},
		{"pod-list-all-forbidden.json", 403, "Forbidden", "spec.nodeName field selector"},
		{"pod-get-missing.json", 403, "Forbidden", "no relationship found"},
		{"pod-status-wrong-uid.json", 422, "Invalid", "metadata.uid"},
		{"configmap-forbidden.json", 403, "Forbidden", "no relationship found"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			resp := &http.Response{StatusCode: tt.code, Header: http.Header{}}
			ae := statusError("GET", "/x", resp, readAPI(t, tt.file))
			if ae.Code != tt.code || ae.Reason != tt.reason || !strings.Contains(ae.Message, tt.msgContain) {
				t.Errorf("got %d %q %q, want %d %q containing %q", ae.Code, ae.Reason, ae.Message, tt.code, tt.reason, tt.msgContain)
			}
		})
	}
}

func TestStatusErrorRetryAfterAndPlainBodies(t *testing.T) {
	tests := []struct {
		code       int
		retryAfter string
		body       string
		want       APIError
	}{
		{429, "3", `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"rate limited","reason":"TooManyRequests","code":429}`,
			APIError{Code: 429, Reason: "TooManyRequests", Message: "rate limited", RetryAfter: 3 * time.Second}},
		{503, "100000", `{"kind":"Status","code":503,"reason":"ServiceUnavailable","message":"busy"}`,
			APIError{Code: 503, Reason: "ServiceUnavailable", Message: "busy", RetryAfter: maxRetryAfter}},
		{401, "", `{"kind":"Status","code":401,"reason":"Unauthorized","message":"unknown device credential"}`,
			APIError{Code: 401, Reason: "Unauthorized", Message: "unknown device credential"}},
		{502, "", "<html>bad gateway</html>", APIError{Code: 502, Reason: "Bad Gateway", Message: "<html>bad gateway</html>"}},
		{429, "soon", `{}`, APIError{Code: 429, Reason: "Too Many Requests", Message: "{}"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code, tt.retryAfter), func(t *testing.T) {
			h := http.Header{}
			if tt.retryAfter != "" {
				h.Set("Retry-After", tt.retryAfter)
			}
			got := statusError("GET", "/p", &http.Response{StatusCode: tt.code, Header: h}, []byte(tt.body))
			tt.want.Method, tt.want.Path = "GET", "/p"
			if *got != tt.want {
				t.Errorf("got %+v, want %+v", *got, tt.want)
			}
		})
	}
}

func TestParseRecordedPodList(t *testing.T) {
	b := readAPI(t, "pod-list.json")
	m := decodeMap(t, b)
	v, _ := parseJSON(b)
	l, err := parsePodList(v)
	if err != nil {
		t.Fatal(err)
	}
	if l.rv != field(m, "metadata", "resourceVersion") {
		t.Errorf("rv: got %q, want %v", l.rv, field(m, "metadata", "resourceVersion"))
	}
	items := m["items"].([]any)
	if len(l.pods) != len(items) || len(items) == 0 {
		t.Fatalf("got %d pods, want %d (> 0)", len(l.pods), len(items))
	}
	p, item := l.pods[0], items[0].(map[string]any)
	if p.uid != field(item, "metadata", "uid") || p.name != "blink-1" || p.namespace != "default" || p.nodeName != "pico-1" {
		t.Errorf("got %s/%s uid %s node %s, want default/blink-1 uid %v node pico-1", p.namespace, p.name, p.uid, field(item, "metadata", "uid"), p.nodeName)
	}
	if len(p.containers) != 1 {
		t.Fatalf("got %d containers, want 1", len(p.containers))
	}
	c := p.containers[0]
	if c.name != "app" || c.image != BlinkImage || fmt.Sprint(c.args) != "[--period=2s]" || fmt.Sprint(c.env) != "[{LED GP25}]" {
		t.Errorf("got container %+v", c)
	}
	if p.restartPolicy != "Always" || p.phase != "Pending" || p.deleting || p.grace != -1 {
		t.Errorf("got policy %s phase %s deleting %v grace %d, want Always Pending false -1", p.restartPolicy, p.phase, p.deleting, p.grace)
	}
}

func TestParseRecordedPodStatusAdoption(t *testing.T) {
	// A pod this device (or its previous boot) ran: restartCount 0 and a
	// containerID, so a new agent starts it as restart 1.
	v, _ := parseJSON(readAPI(t, "pod-status-patch.json"))
	p, err := parsePod(v)
	if err != nil {
		t.Fatal(err)
	}
	if p.phase != "Running" || p.containers[0].restarts != 1 || p.startTime.IsZero() || p.scheduledAt.IsZero() {
		t.Errorf("got phase %s restarts %d start %s scheduled %s, want Running 1 and times set", p.phase, p.containers[0].restarts, p.startTime, p.scheduledAt)
	}
}

func TestParseRecordedConfigMap(t *testing.T) {
	v, _ := parseJSON(readAPI(t, "configmap.json"))
	if got := v.get("data", "memory_values").strOr(""); got != "[12, 34, 56]" {
		t.Errorf("got %q, want %q", got, "[12, 34, 56]")
	}
}

// TestWatchStreamGolden replays recorded watch streams through the agent's
// event handling and compares what it understood with a golden summary.
func TestWatchStreamGolden(t *testing.T) {
	for _, name := range []string{"watch-pods", "watch-gone"} {
		t.Run(name, func(t *testing.T) {
			a := &Agent{stats: &stats{}}
			var out bytes.Buffer
			br := bufio.NewReader(bytes.NewReader(readAPI(t, name+".jsonl")))
			rv := "start"
			var line []byte
			for {
				var err error
				line, err = readLine(br, line[:0], DefaultMaxResponseBytes)
				if err != nil {
					fmt.Fprintf(&out, "end: %v\n", err)
					break
				}
				var gone bool
				rv, gone, err = a.handleEvent(line, rv, func(p *pod) {
					fmt.Fprintf(&out, "pod %s phase=%s deleting=%v grace=%d gone=%v containers=%d ", p.key(), p.phase, p.deleting, p.grace, p.gone, len(p.containers))
				})
				fmt.Fprintf(&out, "rv=%s gone=%v err=%v\n", rvClass(rv), gone, err)
			}
			golden := filepath.Join("testdata", "parsed", name+".txt")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != string(want) {
				t.Errorf("got\n%s\nwant\n%s", out.String(), want)
			}
		})
	}
}

// rvClass hides resourceVersion numbers, which change with each recording.
func rvClass(rv string) string {
	if rv == "start" || rv == "" {
		return rv
	}
	return "N"
}

func TestParseWatchEventRejects(t *testing.T) {
	for _, in := range []string{`{"type":"ADDED"}`, `{"type":"WHAT","object":{}}`, `{"type":"ADDED","object":[]}`, `not json`, `{"type":"ADDED","object":{}}x`} {
		if _, err := parseWatchEvent([]byte(in)); err == nil {
			t.Errorf("parseWatchEvent(%s): got nil error, want one", in)
		}
	}
}

func TestReadLine(t *testing.T) {
	long := strings.Repeat("x", 5000)
	tests := []struct {
		in      string
		max     int
		lines   []string
		lastErr string
	}{
		{"a\nb\n", 100, []string{"a", "b"}, "EOF"},
		{long + "\n", 6000, []string{long}, "EOF"},
		{long + "\n", 4500, nil, "watch event over 4500 bytes"},
		{"a\npartial", 100, []string{"a"}, "unexpected EOF"},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.in), 4096)
			var got []string
			var err error
			for {
				var l []byte
				l, err = readLine(br, nil, tt.max)
				if err != nil {
					break
				}
				got = append(got, string(l))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.lines) || err.Error() != tt.lastErr {
				t.Errorf("got %d lines, err %v; want %d lines, err %s", len(got), err, len(tt.lines), tt.lastErr)
			}
		})
	}
}

func FuzzWatchEvent(f *testing.F) {
	for _, name := range []string{"watch-pods.jsonl", "watch-gone.jsonl"} {
		b, err := os.ReadFile(filepath.Join("testdata", "api", name))
		if err != nil {
			continue
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			f.Add(line)
		}
	}
	f.Add([]byte(`{"type":"ERROR","object":{"kind":"Status","code":410}}`))
	f.Add([]byte(`{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"b","uid":"c"},"spec":{"containers":[{"name":"x","image":"y","args":["1"],"env":[{"name":"e","value":"v"}]}]},"status":{"containerStatuses":[{"name":"x","restartCount":3,"containerID":"z"}]}}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		a := &Agent{stats: &stats{}}
		rv, _, err := a.handleEvent(line, "1", func(p *pod) {
			if p.name == "" || p.namespace == "" || p.uid == "" || len(p.containers) == 0 {
				t.Fatalf("handled a pod without identity or containers: %+v", p)
			}
		})
		if err == nil && rv == "" {
			t.Fatalf("accepted event left an empty resourceVersion")
		}
	})
}
