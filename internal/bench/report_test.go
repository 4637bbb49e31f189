package bench

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func ptr(v float64) *float64 { return &v }

// sampleReport is a fixed report covering every kind of row: a proxy and no proxy, a skipped row,
// errors, watch and mix rows, and a fleet table.
func sampleReport() *Report {
	r := &Report{
		Date:    time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC),
		Machine: Machine{Cores: 2, CPUModel: "Intel(R) Xeon(R) Processor", Kernel: "6.18.44", GoVersion: "go1.26.8", Nginx: "nginx/1.22.1", APIServer: "v1.37.2"},
		Settings: Settings{Rounds: 3, DurationSeconds: 5, WarmupSeconds: 0.5, Conns: 16, Watchers: 100, WatchRepeats: 30,
			MixDevices: 200, MixSeconds: 20, LoadAverage: [2]float64{1.5, 2.25}},
		Handler: []HandlerCost{{Benchmark: "BenchmarkHandler", BytesPerOp: 7468, AllocsPerOp: 64}},
		Notes:   "Measured apart: GET −4%.",
	}
	row := func(target, workload string, rps, p50, cpu float64, errs map[string]int64) Result {
		res := Result{Target: target, Workload: workload, Requests: int64(rps * 15), Seconds: 15, RPS: rps, Samples: int(rps * 15),
			P50: p50, P99: p50 * 4, P999: p50 * 6, APICPU: 550, ClientCPU: 30, BytesPerReq: 2593, PeakRSS: 24 << 20, BackgroundCPU: 10}
		if cpu > 0 {
			res.ProxyCPU = ptr(cpu)
		} else {
			res.PeakRSS = 0
		}
		for _, v := range errs {
			res.ErrorCount += v
		}
		res.Errors = errs
		return res
	}
	watchRow := func(target string, p50, cpu float64) Result {
		res := row(target, WorkloadWatch, 0, p50, cpu, nil)
		res.Requests, res.Samples, res.BytesPerReq = 90, 90, 0
		return res
	}
	r.Results = []Result{
		row(TargetDirect, WorkloadGet, 2100, 6700, 0, nil),
		row(TargetNginxSeed, WorkloadGet, 700, 22000, 500, nil),
		row(TargetNginxTuned, WorkloadGet, 1300, 10900, 60, nil),
		row(TargetToken, WorkloadGet, 1350, 10500, 55, nil),
		row(TargetNginxSeed, WorkloadPatchClose, 260, 50000, 680, nil),
		row(TargetNginxTuned, WorkloadPatchClose, 500, 25000, 137, nil),
		row(TargetToken, WorkloadPatchClose, 700, 20000, 150, map[string]int64{"status 503": 3, "timeout": 1}),
		watchRow(TargetDirect, 8000, 0),
		watchRow(TargetToken, 9000, 40),
		{Target: TargetDirect, Workload: WorkloadMix, Skipped: "picosim speaks plain HTTP only"},
		{Target: TargetToken, Workload: WorkloadMix, Requests: 1200, Seconds: 60, RPS: 20, APICPU: 2000, ClientCPU: 50,
			ProxyCPU: ptr(600), PeakRSS: 40 << 20, ErrorCount: 2, Errors: map[string]int64{"chunked": 2}},
	}
	r.Fleet = sampleFleet(r.Date, r.Machine)
	r.Profiles = []ProfileNote{{Target: TargetToken, File: "tmp/bench-profiles/picogate-token-get.pprof", Note: "GET workload, 5 s",
		Top: []string{"Duration: 5s, Total samples = 900ms (18.00%)", "      flat  flat%   sum%        cum   cum%",
			"     210ms 23.33% 23.33%      210ms 23.33%  internal/runtime/syscall/linux.Syscall6"}}}
	r.finish()
	return r
}

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
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("got:\n%s\nwant (%s):\n%s", got, path, want)
	}
}

func TestMarkdownGolden(t *testing.T) {
	var b bytes.Buffer
	sampleReport().Markdown(&b)
	golden(t, "benchmarks.md.golden", b.Bytes())
}

func TestJSONGolden(t *testing.T) {
	b, err := json.MarshalIndent(sampleReport(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "benchmarks.json.golden", append(b, '\n'))
}

func TestGoals(t *testing.T) {
	checkGoals(t, sampleReport().Goals, []goalWant{
		{"get: picogate per-device", goalMet, "1.04×, met"},
		{"patch: picogate per-device", goalNotMeasured, "needs"},
		{"patch-close: picogate per-device", goalMet, "CPU/request 150 µs vs 137 µs (1.09×, met; stretch missed by 9%)"},
		{"patch-close (the firmware's pattern)", goalMissed, "2.69× (missed by 10%)"},
		{"watch fan-out", goalMet, "+4.0 ms"},
	})
}

// goalWant is a goal expected among a report's goals: the one whose text starts with prefix.
type goalWant struct{ prefix, status, detail string }

// checkGoals finds each wanted goal by its prefix and checks its status and that its detail says detail.
func checkGoals(t *testing.T, goals []Goal, want []goalWant) {
	t.Helper()
	for _, w := range want {
		t.Run(w.prefix, func(t *testing.T) {
			for _, g := range goals {
				if strings.HasPrefix(g.Goal, w.prefix) {
					if g.Status != w.status || !strings.Contains(g.Detail, w.detail) {
						t.Errorf("got %s %q, want %s with %q", g.Status, g.Detail, w.status, w.detail)
					}
					return
				}
			}
			t.Errorf("got no goal starting %q", w.prefix)
		})
	}
}

// TestWriteKeepsTheOtherPart: a fleet run keeps the targets' tables and a targets run keeps the fleet's.
func TestWriteKeepsTheOtherPart(t *testing.T) {
	dir := t.TempDir()
	full := sampleReport()
	fleet := full.Fleet
	targets := *full
	targets.Fleet = nil
	if err := targets.write(dir, false); err != nil {
		t.Fatal(err)
	}
	fleetOnly := &Report{Fleet: fleet}
	if err := fleetOnly.write(dir, true); err != nil {
		t.Fatal(err)
	}
	var got Report
	b, err := os.ReadFile(filepath.Join(dir, "benchmarks.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Results) != len(full.Results) || got.Fleet == nil || len(got.Fleet.Rows) != len(fleet.Rows) {
		t.Fatalf("after a fleet run: got %d results and fleet %v, want %d and %d rows", len(got.Results), got.Fleet, len(full.Results), len(fleet.Rows))
	}
	again := *full
	again.Fleet = nil
	if err := again.write(dir, false); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "benchmarks.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "| firmware | picogate | 5,000 | 4,990 / 5,000 |") {
		t.Errorf("after a second targets run: got no fleet row in the markdown, want it kept")
	}
}

func TestCellResult(t *testing.T) {
	c := &cell{target: TargetToken, workload: WorkloadGet}
	c.addLoad(loadResult{Requests: 900, Errors: map[string]int64{"status 503": 100}, Bytes: 900 * 2000, Elapsed: time.Second,
		Latencies: []time.Duration{time.Millisecond, 2 * time.Millisecond}}, usage{ProxyCPU: 100 * time.Millisecond, APICPU: time.Second, PeakRSS: 1 << 20})
	c.addLoad(loadResult{Requests: 1000, Bytes: 1000 * 2000, Elapsed: time.Second, Latencies: []time.Duration{3 * time.Millisecond}},
		usage{ProxyCPU: 100 * time.Millisecond, APICPU: time.Second, PeakRSS: 2 << 20})
	r := c.result()
	// 200 ms of proxy CPU over 2000 answered requests (the 100 refused ones cost CPU too).
	if r.ProxyCPU == nil || *r.ProxyCPU != 100 || r.APICPU != 1000 {
		t.Errorf("CPU per request: got proxy %v api %v, want 100 µs and 1000 µs", r.ProxyCPU, r.APICPU)
	}
	if r.RPS != 950 || r.ErrorCount != 100 || r.PeakRSS != 2<<20 || r.BytesPerReq != 2000 || r.P50 != 2000 || r.Samples != 3 {
		t.Errorf("got %+v, want 950 req/s, 100 errors, peak 2 MiB, 2000 bytes, p50 2 ms of 3 samples", r)
	}
}

func TestConfigValidateReportsEverything(t *testing.T) {
	cfg := Config{BinDir: t.TempDir(), Targets: []string{"haproxy"}, Workloads: []string{"get", "pipelined"}, Rounds: -1, Fleet: []int{0}}.withDefaults()
	err := cfg.validate()
	if err == nil {
		t.Fatal("got no error, want one")
	}
	for _, want := range []string{`target "haproxy"`, `workload "pipelined"`, "rounds -1", "fleet size 0", "picogate not found", "picosim not found"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to mention %q", err, want)
		}
	}
}

func TestHeartbeatFitsTheFirmwareBuffer(t *testing.T) {
	l := &lab{nodes: []string{"bench-16"}, creds: []credential{{Header: "Authorization: Bearer pgt_" + strings.Repeat("x", 60)}}}
	tg := &target{lab: l, perDevice: true, endpoint: Endpoint{Host: "127.0.0.1:6080"}}
	req := tg.requests(WorkloadPatchClose)(0, time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC).Unix())
	if len(req) > 2048 {
		t.Errorf("got a %d-byte request, want it within the firmware's 2048-byte buffer", len(req))
	}
	for _, want := range []string{"PATCH /api/v1/nodes/bench-16/status HTTP/1.1\r\nHost: 127.0.0.1:6080\r\nUser-Agent: k3s-pico-node/1.0\r\nAccept: application/json\r\nConnection: close\r\nAuthorization: Bearer pgt_",
		"Content-Type: application/strategic-merge-patch+json\r\n", `"lastHeartbeatTime":"2026-12-01T09:00:00Z"`} {
		if !strings.Contains(string(req), want) {
			t.Errorf("got %q, want it to contain %q", req, want)
		}
	}
	var body map[string]any
	_, b, _ := strings.Cut(string(req), "\r\n\r\n")
	if err := json.Unmarshal([]byte(b), &body); err != nil {
		t.Errorf("body: got %v, want JSON", err)
	}
}

func TestRefusals(t *testing.T) {
	log := `time=2026-12-01T10:14:03.844Z level=INFO msg="picogate serving devices" listen=127.0.0.1:34695
time=2026-12-01T10:14:03.885Z level=WARN msg=request client=127.0.0.1 method=GET path=/api/v1/nodes/bench-1 status=503 bytes=165 duration=130µs identity=shared route=auth reason="the device registry has not been loaded yet"
time=2026-12-01T10:14:04.000Z level=INFO msg=request client=127.0.0.1 method=PUT path=/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/fleet-1 status=200 route=lease
time=2026-12-01T10:14:05.000Z level=WARN msg=request client=127.0.0.1 method=PUT status=429 route=lease
time=2026-12-01T10:14:06.000Z level=WARN msg=request client=127.0.0.1 method=PUT status=429 route=lease
time=2026-12-01T10:14:07.000Z level=WARN msg=request status=503 route=lease reason="upstream \"timeout\" after 5s"
time=2026-12-01T10:14:08.000Z level=WARN msg=request status=404 route=pod
time=2026-12-01T10:14:09.000Z level=WARN msg=request status=429 route=node-status reason="rate limit exceeded for node fleet-4-187"
time=2026-12-01T10:14:09.000Z level=WARN msg=request status=429 route=node-status reason="rate limit exceeded for node fleet-1-2"
`
	got, err := refusals(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		"503 auth: the device registry has not been loaded yet": 1,
		"429 lease: (no reason: the API server's answer)":       2,
		`503 lease: upstream \"timeout\" after 5s`:              1,
		"429 node-status: rate limit exceeded for node NAME":    2,
	}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%q: got %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}
