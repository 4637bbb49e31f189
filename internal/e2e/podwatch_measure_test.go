package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/gatewaytest"
	"github.com/picogate/picogate/internal/sim"
)

// TestMeasurePodWatchMemory is a measurement, not a check: with PICOGATE_MEASURE_WATCHES=N (e.g. 500) it
// registers N devices and, through a gateway with --shared-pod-watch=false and then through one with the
// default, has each device list its pods and hold its pod watch, as the device library does, and prints
// what the gateway holds live (after a collection) before and with the watches: heap, stacks,
// goroutines, RSS, and the difference per watch; with PICOGATE_MEASURE_PROFILES=DIR also the gateway's
// heap profiles and goroutine stacks with the watches open; PICOGATE_MEASURE_GODEBUG sets the gateway's GODEBUG (e.g.
// adaptivestackstart=0, which changes the stacks little: a watch's handler keeps the stack the request's
// steps grew). Without the variable it does nothing.
func TestMeasurePodWatchMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("PICOGATE_MEASURE_WATCHES"))
	if n <= 0 {
		t.Skip("set PICOGATE_MEASURE_WATCHES=500 to measure")
	}
	var creds []sim.Credential
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i*250 < n; i++ {
		wg.Go(func() {
			c, err := sim.ParseCredentials([]byte(picogate(t, "device", "add", "--count", strconv.Itoa(min(250, n-i*250)), "--prefix", fmt.Sprintf("pwm%d-", i), "-o", "json")))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			creds = append(creds, c...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, mode := range []string{"--shared-pod-watch=false", "--shared-pod-watch=true"} {
		opts := gatewaytest.Options{Kubeconfig: cluster(t).AdminKubeconfig(), Args: []string{mode, "--profiling", "--access-log=false", "--device-rate", "50"}}
		if os.Getenv("PICOGATE_MEASURE_PROFILES") != "" {
			opts.Env = []string{"GODEBUG=memprofilerate=1"} // every allocation in the profile, not a sample
		}
		if v := os.Getenv("PICOGATE_MEASURE_GODEBUG"); v != "" {
			opts.Env = []string{"GODEBUG=" + v} // e.g. adaptivestackstart=0
		}
		gw := gatewaytest.Start(t, opts)
		// Every device is known and has made a request, so its per-device state is in the baseline.
		for _, c := range creds {
			waitAuthenticated(t, gw, c.Token)
		}
		before := liveMemory(t, gw)
		ctx, cancel := context.WithCancel(context.Background())
		tr := &http.Transport{MaxIdleConnsPerHost: -1}
		opened := make(chan error, len(creds))
		slots := make(chan struct{}, 64) // under the gateway's cap on requests in flight
		for _, c := range creds {
			go func() {
				slots <- struct{}{}
				defer func() { <-slots }()
				opened <- holdPodWatch(ctx, tr, gw, c)
			}()
		}
		for range creds {
			if err := <-opened; err != nil {
				t.Fatal(err)
			}
		}
		with := liveMemory(t, gw)
		if dir := os.Getenv("PICOGATE_MEASURE_PROFILES"); dir != "" {
			saveProfile(t, gw, "heap?gc=1", filepath.Join(dir, "heap"+strings.TrimPrefix(mode, "--shared-pod-watch")+".pb.gz"))
			saveProfile(t, gw, "goroutine?debug=2", filepath.Join(dir, "goroutines"+strings.TrimPrefix(mode, "--shared-pod-watch")+".txt"))
		}
		var diffs []string
		for i, k := range memKeys {
			diffs = append(diffs, fmt.Sprintf("%s %+.0f (%.0f per watch)", k, with[i]-before[i], (with[i]-before[i])/float64(len(creds))))
		}
		t.Logf("%s, %d watches: before %v, with the watches %v; difference: %s", mode, len(creds), before, with, strings.Join(diffs, ", "))
		cancel()
		tr.CloseIdleConnections()
		gw.Stop()
	}
}

var memKeys = []string{"heap bytes", "stack bytes", "goroutines", "RSS bytes"}

// liveMemory collects the gateway's garbage (a heap profile with gc=1), then reads what is live.
func liveMemory(t *testing.T, gw *gatewaytest.Gateway) []float64 {
	t.Helper()
	for range 2 {
		resp, err := http.Get("http://" + gw.Admin + "/debug/pprof/heap?gc=1")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	out := []float64{metricValue(t, gw, "go_memstats_heap_alloc_bytes"), metricValue(t, gw, "go_memstats_stack_inuse_bytes"), metricValue(t, gw, "go_goroutines")}
	r, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimPrefix(rss(gw.PID()), "RSS "), " kB"), 64)
	return append(out, r*1024)
}

// saveProfile writes one of the gateway's profiles (e.g. "heap?gc=1") to file.
func saveProfile(t *testing.T, gw *gatewaytest.Gateway, profile, file string) {
	t.Helper()
	resp, err := http.Get("http://" + gw.Admin + "/debug/pprof/" + profile)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// holdPodWatch lists the device's pods and watches them from the list's resourceVersion, as the device
// library does; it returns once the watch is open and holds it until ctx ends.
func holdPodWatch(ctx context.Context, tr http.RoundTripper, gw *gatewaytest.Gateway, c sim.Credential) error {
	client := &http.Client{Transport: tr}
	sel := url.QueryEscape("spec.nodeName=" + c.Name)
	req, _ := http.NewRequestWithContext(ctx, "GET", gw.URL()+"/api/v1/pods?fieldSelector="+sel, nil)
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	var rv string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if _, after, ok := strings.Cut(sc.Text(), `"resourceVersion":"`); ok {
			rv, _, _ = strings.Cut(after, `"`)
		}
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || rv == "" {
		return fmt.Errorf("list of %s: got %d", c.Name, resp.StatusCode)
	}
	req, _ = http.NewRequestWithContext(ctx, "GET", gw.URL()+"/api/v1/pods?fieldSelector="+sel+"&watch=1&resourceVersion="+rv+"&allowWatchBookmarks=true&timeoutSeconds=600", nil)
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err = client.Do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		return fmt.Errorf("watch of %s: got %d", c.Name, resp.StatusCode)
	}
	go func() {
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
	}()
	return nil
}

// TestMeasurePodWatchFleet is a measurement, not a check: with PICOGATE_MEASURE_AGENTS=N (e.g. 200) it
// runs N picosim boards in agent mode (the device package: Lease, status, the pod watch) for
// PICOGATE_MEASURE_DURATION (default 1m) through a gateway with the defaults, and prints how their pod
// watches were answered (served, relayed and why), the lists the shared pod watch made, the boards' errors
// and the gateway's RSS. Without the variable it does nothing.
func TestMeasurePodWatchFleet(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("PICOGATE_MEASURE_AGENTS"))
	if n <= 0 {
		t.Skip("set PICOGATE_MEASURE_AGENTS=200 to measure")
	}
	duration := time.Minute
	if v := os.Getenv("PICOGATE_MEASURE_DURATION"); v != "" {
		var err error
		if duration, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	var creds []sim.Credential
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i*250 < n; i++ {
		wg.Go(func() {
			c, err := sim.ParseCredentials([]byte(picogate(t, "device", "add", "--count", strconv.Itoa(min(250, n-i*250)), "--prefix", fmt.Sprintf("pwf%d-", i), "-o", "json")))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			creds = append(creds, c...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	gw := startGateway(t, "--access-log=false", "--device-rate", "50")
	s, err := sim.New(sim.Config{Gateway: gw.URL(), Credentials: creds, Mode: sim.ModeAgent, Duration: duration, Jitter: true})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var answered []string
	for _, r := range []string{"served", "gone", "relayed-query", "relayed-not-ready", "relayed-unauthorized", "relayed-no-revision", "relayed-too-new", "relayed-not-fresh"} {
		if v := metricValue(t, gw, `picogate_pod_watch_requests_total{result="`+r+`"}`); v > 0 {
			answered = append(answered, fmt.Sprintf("%s %.0f", r, v))
		}
	}
	t.Logf("%d agent boards for %v: %d ready at the end, %d requests, errors %v; pod watches: %s; open now %.0f; lists made: as a device %.0f, for the revision %.0f; gateway %s",
		rep.Devices, duration, rep.DevicesReady, rep.Requests, rep.Errors, strings.Join(answered, ", "), metricValue(t, gw, "picogate_pod_watches_served"),
		max(0, metricValue(t, gw, `picogate_pod_watch_probes_total{kind="device"}`)), max(0, metricValue(t, gw, `picogate_pod_watch_probes_total{kind="revision"}`)), rss(gw.PID()))
}
