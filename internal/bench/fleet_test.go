package bench

import (
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// sampleFleet is a fleet run with every kind of row: firmware mode at two sizes, agent mode, a
// report row from before modes existed, and the nginx baseline.
func sampleFleet(date time.Time, m Machine) *FleetReport {
	row := func(mode, via string, n int, apiReq, apiCPU, etcdBytes float64, rss int64) FleetRow {
		return FleetRow{Mode: mode, Via: via, Devices: n, RampSeconds: 60, SteadySeconds: 330, Seconds: 391,
			Requests: uint64(n) * 40, RPS: float64(n) / 8, DevicesReady: n, ReadyMin: n, ReadyEnd: n, ReadySamples: 22,
			GatewayPeakRSS: rss << 20, GatewayCPUPercent: float64(n) / 100, GatewayCPUPerReq: 80,
			APIServerRPS: apiReq * float64(n) / 60, APIServerCPU: apiCPU * float64(n) / 600, EtcdCPU: 5,
			EtcdWALBytes: etcdBytes * float64(n) * 5.5, EtcdPuts: float64(n) * 5.5,
			APIRequestsPerDeviceMinute: apiReq, APICPUPerDeviceMinute: apiCPU, EtcdBytesPerDeviceMinute: etcdBytes,
			SimCPU: 7, BackgroundCPU: 3}
	}
	fw1 := row("firmware", viaPicogate, 1000, 0.6, 1.1, 420, 80)
	fw5 := row("firmware", viaPicogate, 5000, 0.7, 1.3, 450, 180)
	fw5.ReadyMin = 4990
	fw5.ErrorsRamp = map[string]uint64{"http-503": 12}
	agent := row("agent", viaPicogate, 5000, 7.1, 9.5, 2900, 300)
	agent.Via, agent.LeaseRenewals, agent.LeaseLate = viaPicogate, 150000, 3
	agent.ErrorsAfterRamp, agent.ErrorCountAfter = map[string]uint64{"http-503": 4}, 4
	agent.GatewayRefusals = map[string]int{"503 lease: upstream: timeout": 4}
	nginx := row("firmware", viaNginx, 5000, 8.0, 31, 24000, 12)
	old := FleetRow{Devices: 10000, Seconds: 60, Requests: 120000, RPS: 2000, DevicesReady: 9990, ErrorCount: 5,
		Errors: map[string]uint64{"timeout": 5}, GatewayPeakRSS: 300 << 20, APIServerRPS: 1900, APIServerCPU: 100}
	f := &FleetReport{Date: date, Machine: m, Rows: []FleetRow{fw1, fw5, agent, nginx, old}}
	f.finish()
	return f
}

func TestFleetGoals(t *testing.T) {
	f := sampleFleet(time.Time{}, Machine{})
	want := []goalWant{
		{"reference-firmware fleet vs the same through nginx-tuned, per board-minute over the steady window: ≥ 5× fewer etcd", goalMet, "5,000 boards: 450 vs 24,000 bytes (53.3×, met)"},
		{"reference-firmware fleet vs the same through nginx-tuned, per board-minute over the steady window: ≥ 3× less API", goalMet, "1.30 vs 31.0 ms (23.8×, met)"},
		{"reference-firmware fleet vs the same through nginx-tuned, per board-minute over the steady window: ≥ 2× fewer API", goalMet, "0.70 vs 8.00 requests (11.4×, met)"},
		{"5,000 reference-firmware boards", goalMissed, "Ready (API server) fewest 4990, at the end 5000 of 5000; 0 errors after the ramp; peak RSS 180 MB"},
		{"agent mode, 5,000 boards", goalMissed, "4 errors after the ramp (http-503: 4); peak RSS 300 MB (44 MB over)"},
		{"stretch: 10,000 reference-firmware", goalNotMeasured, "did not include 10,000 firmware-mode boards"},
		{"stretch: agent mode, 10,000", goalNotMeasured, "did not include"},
	}
	if len(f.Goals) != len(want) {
		t.Errorf("got %d goals, want %d", len(f.Goals), len(want))
	}
	checkGoals(t, f.Goals, want)
}

func TestFleetGoalsEdges(t *testing.T) {
	base := func(mode, via string, n int, etcd float64) FleetRow {
		return FleetRow{Mode: mode, Via: via, Devices: n, SteadySeconds: 60, ReadyMin: n, ReadyEnd: n, ReadySamples: 4,
			EtcdBytesPerDeviceMinute: etcd, APICPUPerDeviceMinute: 1, APIRequestsPerDeviceMinute: 1, GatewayPeakRSS: 10 << 20}
	}
	tests := []struct {
		name   string
		rows   []FleetRow
		status string
		detail string
	}{
		{"no baseline", []FleetRow{base("firmware", viaPicogate, 200, 100)}, goalNotMeasured, "needs a firmware fleet"},
		{"baseline of another size", []FleetRow{base("firmware", viaPicogate, 200, 100), base("firmware", viaNginx, 300, 900)}, goalNotMeasured, "needs"},
		{"no etcd writes at all", []FleetRow{base("firmware", viaPicogate, 200, 0), base("firmware", viaNginx, 200, 900)}, goalMet, "0.00 vs 900 bytes (∞×, met)"},
		{"missed", []FleetRow{base("firmware", viaPicogate, 200, 300), base("firmware", viaNginx, 200, 900)}, goalMissed, "(3.0×, missed by 40%)"},
		{"largest common size", []FleetRow{base("firmware", viaPicogate, 200, 300), base("firmware", viaPicogate, 400, 100),
			base("firmware", viaNginx, 200, 900), base("firmware", viaNginx, 400, 1000)}, goalMet, "400 boards: 100 vs 1,000 bytes (10.0×, met)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := evaluateFleetGoals(&FleetReport{Rows: tt.rows})[0]
			if g.Status != tt.status || !strings.Contains(g.Detail, tt.detail) {
				t.Errorf("got %s %q, want %s with %q", g.Status, g.Detail, tt.status, tt.detail)
			}
		})
	}
}

func TestFleetGrowthWithinModeAndProxy(t *testing.T) {
	f := sampleFleet(time.Time{}, Machine{})
	fw5, agent, nginx := f.Rows[1], f.Rows[2], f.Rows[3]
	if want := float64(100<<20) / 4000; fw5.RSSPerDevice != want {
		t.Errorf("firmware 5,000: got RSS growth %v, want %v (from firmware 1,000)", fw5.RSSPerDevice, want)
	}
	if agent.RSSPerDevice != 0 || nginx.RSSPerDevice != 0 {
		t.Errorf("got growth %v and %v, want none: no smaller row of the same mode and proxy", agent.RSSPerDevice, nginx.RSSPerDevice)
	}
}

func TestParseEtcdCounters(t *testing.T) {
	tests := []struct {
		name       string
		text       string
		wal, puts  float64
		wantErrSub string
	}{
		{"both", "# HELP etcd_disk_wal_write_bytes_total Total number of bytes written in WAL.\n# TYPE etcd_disk_wal_write_bytes_total gauge\netcd_disk_wal_write_bytes_total 1.234567e+06\netcd_mvcc_put_total 4096\netcd_mvcc_put_total_other 7\n", 1234567, 4096, ""},
		{"no puts", "etcd_disk_wal_write_bytes_total 10\n", 10, 0, ""},
		{"labelled", "etcd_disk_wal_write_bytes_total{a=\"b\"} 10\netcd_disk_wal_write_bytes_total{a=\"c\"} 5\n", 15, 0, ""},
		{"missing", "etcd_mvcc_put_total 4096\n", 0, 0, "no etcd_disk_wal_write_bytes_total"},
		{"garbled", "etcd_disk_wal_write_bytes_total lots\n", 0, 0, "lots"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseEtcdCounters(tt.text)
			if tt.wantErrSub != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrSub) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErrSub)
				}
				return
			}
			if err != nil || got.walBytes != tt.wal || got.puts != tt.puts {
				t.Errorf("got %+v, %v; want wal %v, puts %v", got, err, tt.wal, tt.puts)
			}
		})
	}
}

func TestMeasureWindow(t *testing.T) {
	row := FleetRow{Devices: 100}
	u := usage{ProxyCPU: 3 * time.Second, APICPU: 12 * time.Second, EtcdCPU: 6 * time.Second, MachineCPU: 30 * time.Second}
	row.measureWindow(u, 2*time.Minute, 1600, etcdCounters{walBytes: 2e6, puts: 1600}, 1500)
	want := FleetRow{Devices: 100, GatewayCPUPercent: 2.5, APIServerRPS: 1600.0 / 120, APIServerCPU: 10, EtcdCPU: 5, BackgroundCPU: 7.5,
		EtcdWALBytes: 2e6, EtcdPuts: 1600, GatewayCPUPerReq: 2000, APIRequestsPerDeviceMinute: 8, APICPUPerDeviceMinute: 60, EtcdBytesPerDeviceMinute: 10000}
	if !reflect.DeepEqual(row, want) {
		t.Errorf("got %+v\nwant %+v", row, want)
	}
}

func TestFleetPlan(t *testing.T) {
	cfg := Config{Fleet: []int{5000, 1000}, FleetModes: []string{"firmware", "agent"}, FleetBaseline: []int{5000}, FleetRamp: time.Minute}
	var got []string
	for _, r := range cfg.fleetPlan() {
		got = append(got, r.mode+"/"+r.via+"/"+thousands(r.n)+"/"+r.steady.String())
	}
	want := "firmware/picogate/1,000/5m30s firmware/picogate/5,000/5m30s agent/picogate/1,000/2m0s agent/picogate/5,000/2m0s firmware/nginx-tuned/5,000/5m30s"
	if strings.Join(got, " ") != want {
		t.Errorf("got %s\nwant %s", strings.Join(got, " "), want)
	}
	cfg.FleetSteady = 40 * time.Second
	for _, r := range cfg.fleetPlan() {
		if r.steady != 40*time.Second {
			t.Errorf("%s %d: got steady %s, want the --fleet-steady 40s", r.mode, r.n, r.steady)
		}
	}
}

func TestCountReady(t *testing.T) {
	node := mkNode
	nodes := []corev1.Node{node("fleet-1-1", "True"), node("fleet-1-2", "Unknown"), node("nginx-fleet-1", "True"), node("fleet-1-3", ""), node("bench-1", "True")}
	tests := []struct {
		prefix string
		want   int
	}{{fleetPrefix, 1}, {baselinePrefix, 1}, {"bench-", 1}, {"none-", 0}}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			if got := countReady(nodes, tt.prefix); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

// mkNode is a Node with a Ready condition of status st (none when st is empty).
func mkNode(name string, st corev1.ConditionStatus) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if st != "" {
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeMemoryPressure, Status: "False"}, {Type: corev1.NodeReady, Status: st}}
	}
	return n
}
