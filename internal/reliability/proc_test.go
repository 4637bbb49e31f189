package reliability

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/gatewaytest"
)

// procMem is a process's memory as the kernel reports it in /proc/PID/status.
type procMem struct {
	RSS, HWM int64 // resident now and at its peak, bytes
	Threads  int
}

// readProcMem reads /proc/PID/status.
func readProcMem(pid int) (procMem, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procMem{}, err
	}
	defer f.Close()
	var m procMem
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fields[0], 10, 64)
		switch k {
		case "VmRSS":
			m.RSS = n << 10
		case "VmHWM":
			m.HWM = n << 10
		case "Threads":
			m.Threads = int(n)
		}
	}
	return m, sc.Err()
}

func mustProcMem(t testing.TB, gw *gatewaytest.Gateway) procMem {
	t.Helper()
	m, err := readProcMem(gw.PID())
	if err != nil {
		t.Fatalf("reading the gateway's /proc status: %v", err)
	}
	return m
}

// openFDs counts the gateway's open file descriptors.
func openFDs(t testing.TB, gw *gatewaytest.Gateway) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", gw.PID()))
	if err != nil {
		t.Fatalf("reading the gateway's fds: %v", err)
	}
	return len(ents)
}

// loadAverage is the machine's 1-, 5- and 15-minute load average (/proc/loadavg): the tests share the
// machine, and a soak on an overloaded one fails for the API server's sake, not the gateway's.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// metrics scrapes the gateway's admin /metrics into "name{labels}" → value.
func metrics(t testing.TB, gw *gatewaytest.Gateway) map[string]float64 {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + gw.Admin + "/metrics")
	if err != nil {
		t.Fatalf("scraping metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scraping metrics: %v", err)
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// sumMetric adds every series of a metric whose labels contain all of the given label pairs.
func sumMetric(m map[string]float64, name string, labels ...string) float64 {
	var s float64
	for k, v := range m {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(k, l) {
				ok = false
			}
		}
		if ok {
			s += v
		}
	}
	return s
}

// readyz returns /readyz's status code and body ("" and 0 if the admin port does not answer).
func readyz(gw *gatewaytest.Gateway) (int, string) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + gw.Admin + "/readyz")
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
