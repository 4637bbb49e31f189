package e2e

import (
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHammeringDeviceDoesNotSlowOthers: one device sending 200 requests/s spends only its own rate
// budget (it gets 429s, which cost the API server nothing), and a quiet device's latency stays close to
// its idle value. Margin: loaded p99 ≤ 3 × idle p99 + 50 ms — loose enough for a 2-core machine where the
// hammering itself takes CPU and other test packages run alongside, tight enough to catch a gateway that
// queues everyone behind the hammering device (that would add the loud device's whole backlog).
func TestHammeringDeviceDoesNotSlowOthers(t *testing.T) {
	gw := startGateway(t, "--device-rate", "10", "--device-burst", "20")
	quiet := addDevice(t, "fair-quiet-1")
	loud := addDevice(t, "fair-loud-1")
	waitAuthenticated(t, gw, quiet.Token)
	waitAuthenticated(t, gw, loud.Token)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	get := func(token string) (int, time.Duration) {
		req, _ := http.NewRequest("GET", gw.URL()+"/version", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("request: %v", err)
			return 0, 0
		}
		resp.Body.Close()
		return resp.StatusCode, time.Since(start)
	}
	// The quiet device: 8 requests/s, inside its own limit, 80 samples.
	sample := func() (p99 time.Duration, limited int) {
		var lat []time.Duration
		for range 80 {
			code, d := get(quiet.Token)
			if code == 429 {
				limited++
			}
			lat = append(lat, d)
			time.Sleep(125 * time.Millisecond)
		}
		slices.Sort(lat)
		return lat[len(lat)*99/100], limited
	}
	idle, _ := sample()

	var stop atomic.Bool
	var wg sync.WaitGroup
	var loudCodes sync.Map
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond) // 200 requests/s
		defer tick.Stop()
		for !stop.Load() {
			<-tick.C
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, _ := get(loud.Token)
				n, _ := loudCodes.LoadOrStore(code, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}()
		}
	}()
	loaded, limited := sample()
	stop.Store(true)
	wg.Wait()

	count := func(code int) int64 {
		if n, ok := loudCodes.Load(code); ok {
			return n.(*atomic.Int64).Load()
		}
		return 0
	}
	t.Logf("quiet device p99: idle %v, while another device sent 200 req/s %v; loud device: %d × 200, %d × 429",
		idle.Round(100*time.Microsecond), loaded.Round(100*time.Microsecond), count(200), count(429))
	if limited > 0 {
		t.Errorf("the quiet device got %d × 429, want none: it stayed within its own limit", limited)
	}
	if count(429) == 0 {
		t.Errorf("the loud device got no 429, want its excess refused")
	}
	if limit := 3*idle + 50*time.Millisecond; loaded > limit {
		t.Errorf("quiet device p99 under load: got %v, want ≤ %v (3 × idle %v + 50 ms)", loaded, limit, idle)
	}
}
