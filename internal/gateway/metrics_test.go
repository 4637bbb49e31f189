package gateway

import (
	"strings"
	"testing"

	"github.com/picogate/picogate/internal/registry"
)

func TestDeviceMetricsSwitch(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(map[bool]string{true: "on", false: "off"}[on], func(t *testing.T) {
			g := newTestGateway(t, Config{Registry: registryOf(dev("pico-1", registry.AuthToken)), DeviceMetrics: on})
			st := g.states.get("pico-1")
			st.requestsFor(g.metrics, "pico-1", 200).Inc()
			st.rateLimited.Inc()
			st.lastSeen.Set(1)
			families, err := g.metrics.reg.Gather()
			if err != nil {
				t.Fatalf("Gather: %v", err)
			}
			var perDevice []string
			for _, f := range families {
				if strings.HasPrefix(f.GetName(), "picogate_device_") {
					perDevice = append(perDevice, f.GetName())
				}
				if f.GetName() == "picogate_discarded" {
					t.Errorf("the per-device stand-in is exported")
				}
			}
			if want := map[bool]int{true: 3, false: 0}[on]; len(perDevice) != want {
				t.Errorf("got per-device families %v, want %d", perDevice, want)
			}
		})
	}
}
