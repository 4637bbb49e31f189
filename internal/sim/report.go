package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"
)

// FirmwareBuffer is the reference firmware's response buffer: 4096 bytes,
// headers included, 4095 usable.
const FirmwareBuffer = 4096

// DeviceReport is one device's counters.
type DeviceReport struct {
	Name          string            `json:"name"`
	Ready         bool              `json:"ready"`
	Requests      uint64            `json:"requests"`
	Errors        map[string]uint64 `json:"errors,omitempty"`
	LastError     string            `json:"last_error,omitempty"`
	LastErrorAt   time.Time         `json:"last_error_at,omitzero"`
	LeaseRenewals uint64            `json:"lease_renewals"`
	LeaseLate     uint64            `json:"lease_renewals_late"`
	StatusPatches uint64            `json:"status_patches"`
	Pods          int               `json:"pods"`
	Containers    int               `json:"containers"`
	// Firmware mode: responses that did not fit the 4096-byte buffer, or
	// came chunked (which that firmware cannot decode), and the largest one.
	Oversize     uint64 `json:"oversize_responses"`
	Chunked      uint64 `json:"chunked_responses"`
	MaxResponse  int    `json:"max_response_bytes,omitempty"`
	ConfigValues string `json:"config_memory_values,omitempty"`
	// EnrollSeconds is how long the board's enrollment took (with --enroll-token), approval included.
	EnrollSeconds float64 `json:"enroll_seconds,omitempty"`
}

// Report is the fleet's final report.
type Report struct {
	Mode              string            `json:"mode"`
	Devices           int               `json:"devices"`
	DurationSeconds   float64           `json:"duration_seconds"`
	Requests          uint64            `json:"requests"`
	Errors            map[string]uint64 `json:"errors"`
	DevicesReady      int               `json:"devices_ready"`
	LeaseRenewals     uint64            `json:"lease_renewals"`
	LeaseRenewalsLate uint64            `json:"lease_renewals_late"`
	StatusPatches     uint64            `json:"status_patches"`
	OversizeResponses uint64            `json:"oversize_responses"`
	ChunkedResponses  uint64            `json:"chunked_responses"`
	MaxResponseBytes  int               `json:"max_response_bytes"`
	// Enrolling is set when the boards enrolled themselves; Enrolled of them did, the slowest in
	// EnrollSecondsMax.
	Enrolling        bool    `json:"enrolling,omitempty"`
	Enrolled         int     `json:"enrolled,omitempty"`
	EnrollSecondsMax float64 `json:"enroll_seconds_max,omitempty"`
	// RampSeconds is when the boot ramp ended (Config.SplitAt). ErrorsDuringRamp and ErrorsAfterRamp
	// split Errors at it, and RequestsAfterRamp counts the requests sent after it; a run that ended
	// before the ramp did counts everything as the ramp's.
	RampSeconds       float64           `json:"ramp_seconds"`
	ErrorsDuringRamp  map[string]uint64 `json:"errors_during_ramp"`
	ErrorsAfterRamp   map[string]uint64 `json:"errors_after_ramp"`
	RequestsAfterRamp uint64            `json:"requests_after_ramp"`
	PerDevice         []DeviceReport    `json:"per_device"`
}

func (s *Simulator) report(d time.Duration) *Report {
	r := &Report{Mode: s.cfg.Mode, Devices: len(s.devices), DurationSeconds: d.Seconds(), Errors: map[string]uint64{}, Enrolling: s.cfg.Enrollment != nil}
	for _, dr := range s.Snapshot() {
		r.Requests += dr.Requests
		for k, v := range dr.Errors {
			r.Errors[k] += v
		}
		if dr.Ready {
			r.DevicesReady++
		}
		r.LeaseRenewals += dr.LeaseRenewals
		r.LeaseRenewalsLate += dr.LeaseLate
		r.StatusPatches += dr.StatusPatches
		r.OversizeResponses += dr.Oversize
		r.ChunkedResponses += dr.Chunked
		r.MaxResponseBytes = max(r.MaxResponseBytes, dr.MaxResponse)
		if dr.EnrollSeconds > 0 {
			r.Enrolled++
			r.EnrollSecondsMax = max(r.EnrollSecondsMax, dr.EnrollSeconds)
		}
		r.PerDevice = append(r.PerDevice, dr)
	}
	return r
}

// split fills the ramp fields from the devices' counters at the ramp's end (atRamp, in PerDevice's
// order; nil when the run ended first): what came after is the final count less that.
func (r *Report) split(ramp time.Duration, atRamp []DeviceReport) {
	r.RampSeconds = ramp.Seconds()
	r.ErrorsDuringRamp, r.ErrorsAfterRamp, r.RequestsAfterRamp = map[string]uint64{}, map[string]uint64{}, 0
	if len(atRamp) != len(r.PerDevice) {
		maps.Copy(r.ErrorsDuringRamp, r.Errors)
		return
	}
	for i, d := range r.PerDevice {
		then := atRamp[i]
		for k, v := range d.Errors {
			before := min(then.Errors[k], v)
			if before > 0 {
				r.ErrorsDuringRamp[k] += before
			}
			if v > before {
				r.ErrorsAfterRamp[k] += v - before
			}
		}
		r.RequestsAfterRamp += d.Requests - min(then.Requests, d.Requests)
	}
}

// WriteText writes the report for a person.
func (r *Report) WriteText(w io.Writer) error {
	rate := 0.0
	if r.DurationSeconds > 0 {
		rate = float64(r.Requests) / r.DurationSeconds
	}
	var b strings.Builder
	fmt.Fprintf(&b, "picosim report: %s mode, %d devices, %s\n", r.Mode, r.Devices, time.Duration(r.DurationSeconds*float64(time.Second)).Round(time.Second))
	fmt.Fprintf(&b, "  requests            %d (%.1f/s)\n", r.Requests, rate)
	fmt.Fprintf(&b, "  errors              %s\n", formatErrors(r.Errors))
	fmt.Fprintf(&b, "  after the ramp      %s (ramp %s)\n", formatErrors(r.ErrorsAfterRamp), time.Duration(r.RampSeconds*float64(time.Second)).Round(time.Millisecond))
	if r.Enrolling {
		fmt.Fprintf(&b, "  enrolled            %d/%d (hmac, key agreement; slowest %.2f s)\n", r.Enrolled, r.Devices, r.EnrollSecondsMax)
	}
	fmt.Fprintf(&b, "  devices ready       %d/%d at the end\n", r.DevicesReady, r.Devices)
	if r.Mode == ModeAgent {
		fmt.Fprintf(&b, "  lease renewals      %d, late %d\n", r.LeaseRenewals, r.LeaseRenewalsLate)
	}
	fmt.Fprintf(&b, "  status patches      %d\n", r.StatusPatches)
	if r.Mode == ModeFirmware {
		fmt.Fprintf(&b, "  oversize responses  %d (over %d bytes with headers; largest %d)\n", r.OversizeResponses, FirmwareBuffer-1, r.MaxResponseBytes)
		fmt.Fprintf(&b, "  chunked responses   %d\n", r.ChunkedResponses)
	}
	for _, d := range r.PerDevice {
		if d.LastError != "" {
			fmt.Fprintf(&b, "  %s last error: %s\n", d.Name, d.LastError)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSONFile writes the report as JSON (for tests and scripts).
func (r *Report) WriteJSONFile(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	return nil
}

func formatErrors(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
