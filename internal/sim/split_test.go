package sim

import (
	"maps"
	"strings"
	"testing"
	"time"
)

func TestReportSplit(t *testing.T) {
	dev := func(req uint64, errs map[string]uint64) DeviceReport {
		return DeviceReport{Requests: req, Errors: errs}
	}
	tests := []struct {
		name         string
		final        []DeviceReport
		atRamp       []DeviceReport
		during       map[string]uint64
		after        map[string]uint64
		requestsLate uint64
	}{
		{
			name:   "errors on both sides",
			final:  []DeviceReport{dev(50, map[string]uint64{"http-503": 7, "network": 1}), dev(40, map[string]uint64{"http-503": 2})},
			atRamp: []DeviceReport{dev(10, map[string]uint64{"http-503": 5}), dev(4, nil)},
			during: map[string]uint64{"http-503": 5}, after: map[string]uint64{"http-503": 4, "network": 1}, requestsLate: 76,
		},
		{
			name:   "all during the ramp",
			final:  []DeviceReport{dev(9, map[string]uint64{"http-409": 1})},
			atRamp: []DeviceReport{dev(3, map[string]uint64{"http-409": 1})},
			during: map[string]uint64{"http-409": 1}, after: map[string]uint64{}, requestsLate: 6,
		},
		{
			name:   "run ended before the ramp",
			final:  []DeviceReport{dev(9, map[string]uint64{"http-503": 2}), dev(1, nil)},
			atRamp: nil,
			during: map[string]uint64{"http-503": 2}, after: map[string]uint64{}, requestsLate: 0,
		},
		{
			name:   "no errors",
			final:  []DeviceReport{dev(12, nil)},
			atRamp: []DeviceReport{dev(2, nil)},
			during: map[string]uint64{}, after: map[string]uint64{}, requestsLate: 10,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Report{Errors: map[string]uint64{}, PerDevice: tt.final}
			for _, d := range tt.final {
				for k, v := range d.Errors {
					r.Errors[k] += v
				}
			}
			r.split(30*time.Second, tt.atRamp)
			if !maps.Equal(r.ErrorsDuringRamp, tt.during) || !maps.Equal(r.ErrorsAfterRamp, tt.after) || r.RequestsAfterRamp != tt.requestsLate || r.RampSeconds != 30 {
				t.Errorf("got during %v, after %v, requests after %d, ramp %v s; want %v, %v, %d, 30 s",
					r.ErrorsDuringRamp, r.ErrorsAfterRamp, r.RequestsAfterRamp, r.RampSeconds, tt.during, tt.after, tt.requestsLate)
			}
		})
	}
}

func TestNamedBoards(t *testing.T) {
	boards := NamedBoards("nginx-fleet-", 3)
	if len(boards) != 3 || boards[0].Name != "nginx-fleet-1" || boards[2].Name != "nginx-fleet-3" || boards[1].Auth != AuthNone || boards[1].Token != "" {
		t.Fatalf("got %+v, want nginx-fleet-1 … 3 without credentials", boards)
	}
	tests := []struct {
		mode    string
		wantErr string
	}{
		{ModeFirmware, ""},
		{ModeAgent, "only firmware mode runs them"},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			s, err := New(Config{Gateway: "http://127.0.0.1:1", Mode: tt.mode, Credentials: boards})
			if tt.wantErr == "" {
				if err != nil || len(s.devices) != 3 {
					t.Fatalf("got %v, want 3 boards", err)
				}
				f := s.devices[0].(*firmwareDevice)
				got := string(appendFirmwareRequest(nil, "GET", "/x", f.host, f.token, "", nil))
				if strings.Contains(got, "Authorization") {
					t.Errorf("got request\n%s\nwant none with an Authorization header", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
