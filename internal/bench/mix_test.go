package bench

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/picogate/picogate/internal/sim"
)

// The bench reads picosim's report with picosim's own type: whatever picosim writes comes back whole.
func TestReadSimReport(t *testing.T) {
	want := &sim.Report{Mode: sim.ModeFirmware, Devices: 2, DurationSeconds: 3, Requests: 40, Errors: map[string]uint64{"429": 1},
		DevicesReady: 2, StatusPatches: 6, OversizeResponses: 1, ChunkedResponses: 2, MaxResponseBytes: 5000,
		PerDevice: []sim.DeviceReport{{Name: "mix-1", Ready: true, Requests: 20}, {Name: "mix-2", Ready: true, Requests: 20}}}
	path := filepath.Join(t.TempDir(), "firmware.json")
	if err := want.WriteJSONFile(path); err != nil {
		t.Fatal(err)
	}
	got, err := readSimReport(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := readSimReport(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing report: got no error, want one")
	}
}
