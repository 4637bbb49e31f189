package sim

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s (run with -update to create): %v", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("got\n%s\nwant (%s)\n%s", got, path, want)
	}
}

func TestParseCredentials(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		n       int
		wantErr string
	}{
		{"array", `[{"name":"pico-1","auth":"token","token":"pgt_a","header":"Authorization: Bearer pgt_a"},{"name":"pico-2","auth":"ip","source":"127.0.0.11/32"}]`, 2, ""},
		{"object", `{"name":"pico-1","auth":"token","token":"pgt_a"}`, 1, ""},
		{"object with space", "\n  {\"name\":\"p\",\"auth\":\"ip\",\"source\":\"127.0.0.12\"}\n", 1, ""},
		{"empty array", `[]`, 0, "no devices"},
		{"not json", `pico-1`, 0, "want a JSON array or object"},
		{"every problem", `[{"auth":"token"},{"name":"a","auth":"token"},{"name":"b","auth":"ip"},{"name":"c","auth":"x","source":"nope"},{"name":"c","auth":"ip","source":"1.2.3.4"}]`, 0,
			"entry 0: no name\ndevice \"a\": auth token without a token\ndevice \"b\": auth ip without a source\ndevice \"c\": auth \"x\": want token, hmac or ip\ndevice \"c\": source \"nope\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creds, err := ParseCredentials([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(creds) != tt.n {
				t.Fatalf("got %d credentials, %v; want %d, nil", len(creds), err, tt.n)
			}
		})
	}
}

func TestParseCredentialsErrorsNeverShowTokens(t *testing.T) {
	_, err := ParseCredentials([]byte(`[{"name":"a","auth":"bogus","token":"pgt_secret"}]`))
	if err == nil || strings.Contains(err.Error(), "pgt_secret") {
		t.Errorf("got %v, want an error without the token", err)
	}
	if s := (Credential{Name: "a", Auth: "token", Token: "pgt_secret"}).String(); strings.Contains(s, "pgt_secret") {
		t.Errorf("String() = %q shows the token", s)
	}
}

func TestFirmwareRequestBytes(t *testing.T) {
	f := &firmwareDevice{name: "pico-1", addrLabel: "127.0.0.11", date: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC), dateAt: time.Now()}
	f.boot = f.date.Add(-time.Minute)
	f.date = f.date.Add(-time.Since(f.dateAt)) // keep now() at 09:00:00 whatever the test's speed
	var out bytes.Buffer
	for _, r := range []struct{ method, path, token, ctype string }{
		{"POST", "/api/v1/nodes", "", "application/json"},
		{"PATCH", "/api/v1/nodes/pico-1/status", "pgt_example", "application/strategic-merge-patch+json"},
		{"GET", "/api/v1/namespaces/default/configmaps/pico-config", "pgt_example", ""},
	} {
		var body []byte
		switch r.method {
		case "POST":
			body = f.nodeBody()
		case "PATCH":
			body = f.statusBody()
		}
		req := appendFirmwareRequest(nil, r.method, r.path, "192.168.1.10:6080", r.token, r.ctype, body)
		if len(req) > firmwareRequestBuffer {
			t.Errorf("%s %s: %d bytes, over the firmware's %d-byte buffer", r.method, r.path, len(req), firmwareRequestBuffer)
		}
		out.Write(req)
		out.WriteString("\n----\n")
	}
	golden(t, "firmware-requests.txt", out.Bytes())
}

func TestReadFirmwareResponse(t *testing.T) {
	body := strings.Repeat("x", 100)
	big := strings.Repeat("y", 5000)
	const bigHead = "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
	tests := []struct {
		name    string
		in      string
		code    int
		total   int
		chunked bool
		body    string
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nDate: Tue, 01 Dec 2026 09:00:00 GMT\r\n\r\n" + body + "EXTRA", 200, 0, false, body},
		{"closed without length", "HTTP/1.1 403 Forbidden\r\n\r\n" + body, 403, 0, false, body},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n" + body + "\r\n0\r\n\r\n", 200, 0, true, "64\r\n" + body + "\r\n0\r\n\r\n"},
		{"oversize", bigHead + big, 200, len(bigHead) + 5000, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf [FirmwareBuffer]byte
			res, err := readFirmwareResponse(&oneByteReader{r: strings.NewReader(tt.in)}, buf[:])
			if err != nil {
				t.Fatal(err)
			}
			if res.code != tt.code || res.chunked != tt.chunked {
				t.Errorf("got code %d chunked %v, want %d %v", res.code, res.chunked, tt.code, tt.chunked)
			}
			if tt.total != 0 && res.total != tt.total {
				t.Errorf("total: got %d, want %d", res.total, tt.total)
			}
			if tt.name == "oversize" {
				if len(res.body) != FirmwareBuffer-1-len(bigHead) {
					t.Errorf("kept body: got %d bytes, want what fits in %d", len(res.body), FirmwareBuffer-1)
				}
			} else if string(res.body) != tt.body {
				t.Errorf("body: got %q, want %q", res.body, tt.body)
			}
		})
	}
}

// oneByteReader returns at most 7 bytes per Read, to exercise reassembly.
type oneByteReader struct{ r *strings.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(p) > 7 {
		p = p[:7]
	}
	return o.r.Read(p)
}

func TestReportText(t *testing.T) {
	r := &Report{Mode: ModeFirmware, Devices: 2, DurationSeconds: 60, Requests: 120, DevicesReady: 2,
		Errors: map[string]uint64{"http-429": 3, "network": 1}, RampSeconds: 10, ErrorsAfterRamp: map[string]uint64{"http-429": 1}, StatusPatches: 12, OversizeResponses: 1, MaxResponseBytes: 4200,
		PerDevice: []DeviceReport{{Name: "pico-1", LastError: "GET /x: 429 rate limited"}, {Name: "pico-2"}}}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	golden(t, "report-firmware.txt", b.Bytes())
}

func TestNewReportsEveryProblem(t *testing.T) {
	_, err := New(Config{Gateway: "ftp://x", Mode: "bogus", Devices: 3, Duration: -1})
	if err == nil {
		t.Fatal("got nil error")
	}
	for _, want := range []string{"gateway", "mode", "devices 3", "duration", "credentials: none"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to mention %q", err, want)
		}
	}
}

func FuzzReadFirmwareResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: -5\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var buf [FirmwareBuffer]byte
		res, err := readFirmwareResponse(bytes.NewReader(in), buf[:])
		if err != nil {
			return
		}
		if res.total != len(in) && res.total > len(in) {
			t.Fatalf("total %d over input %d", res.total, len(in))
		}
		if len(res.body) > FirmwareBuffer-1 {
			t.Fatalf("body of %d bytes cannot fit the buffer", len(res.body))
		}
	})
}

// fakeDevice is a simDevice whose snapshot is fixed.
type fakeDevice DeviceReport

func (f fakeDevice) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (f fakeDevice) Snapshot() DeviceReport        { return DeviceReport(f) }

func TestSummaryLine(t *testing.T) {
	now := time.Date(2026, 12, 1, 9, 1, 0, 0, time.UTC)
	s := &Simulator{cfg: Config{Mode: ModeAgent}, devices: []simDevice{
		fakeDevice{Name: "a", Ready: true, Requests: 30},
		fakeDevice{Name: "b", Requests: 20, Errors: map[string]uint64{"http-401": 2}, LastErrorAt: now.Add(-time.Second)},
		fakeDevice{Name: "c", Ready: true, Requests: 10, LastErrorAt: now.Add(-time.Hour)},
	}}
	line, req := s.summaryLine(now, now.Add(-time.Minute), 40, 2*time.Second)
	want := "picosim agent | 3 devices: 2 ready, 1 failing | 10.0 req/s | errors http-401: 2 | 1m0s"
	if line != want || req != 60 {
		t.Errorf("got %q, %d; want %q, 60", line, req, want)
	}
}

func TestRunStopsWithDuration(t *testing.T) {
	s := &Simulator{cfg: Config{Mode: ModeAgent, Duration: 50 * time.Millisecond, Summary: io.Discard, SummaryInterval: 10 * time.Millisecond},
		devices: []simDevice{fakeDevice{Name: "a", Ready: true, Requests: 1}}}
	rep, err := s.Run(context.Background())
	if err != nil || rep.Devices != 1 || rep.DevicesReady != 1 || rep.Requests != 1 {
		t.Errorf("got %+v, %v", rep, err)
	}
}

// TestFirmwareDialErrors: a dial that fails is an error; one cut short because the run ended is not (a
// fleet stopped mid-dial would otherwise report errors the gateway never caused).
func TestFirmwareDialErrors(t *testing.T) {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		if err := ctx.Err(); err != nil {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
		}
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	}
	for _, tc := range []struct {
		name       string
		run        func() (context.Context, context.CancelFunc)
		wantErrors uint64
	}{
		{"refused", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }, 1},
		{"the run's duration is over", func() (context.Context, context.CancelFunc) { return context.WithTimeout(context.Background(), 0) }, 0},
		{"the run is stopped", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &firmwareDevice{name: "pico-1", host: "127.0.0.1:1", dial: dial, r: DeviceReport{Errors: map[string]uint64{}}}
			run, cancel := tc.run()
			defer cancel()
			if _, err := f.send(run, "GET", "/api/v1/nodes/pico-1", "", nil); err == nil {
				t.Fatal("send: got nil, want the dial's error")
			}
			if got := f.Snapshot().Errors["network"]; got != tc.wantErrors {
				t.Errorf("network errors: got %d, want %d", got, tc.wantErrors)
			}
		})
	}
}
