package bench

import (
	"runtime"
	"time"
)

// cell accumulates one target × workload over all rounds.
type cell struct {
	target, workload string
	requests         int64
	errors           map[string]int64
	bytes            int64
	elapsed          time.Duration
	latencies        []time.Duration
	use              usage // summed CPU and wall time, max RSS
	background       time.Duration
	hasProxy         bool
	skipped          string
	// events counts watch events delivered (what a watch window's CPU is divided by).
	events int64
	extra  map[string]float64
}

func (c *cell) addUse(u usage, hasProxy bool) {
	c.use.ProxyCPU += u.ProxyCPU
	c.use.APICPU += u.APICPU
	c.use.ClientCPU += u.ClientCPU
	c.use.PeakRSS = max(c.use.PeakRSS, u.PeakRSS)
	c.use.Wall += u.Wall
	c.background += u.background()
	c.hasProxy = hasProxy
}

func (c *cell) addErrors(m map[string]int64) {
	if c.errors == nil {
		c.errors = map[string]int64{}
	}
	for k, v := range m {
		c.errors[k] += v
	}
}

func (c *cell) addLoad(r loadResult, u usage) {
	c.requests += r.Requests
	c.bytes += r.Bytes
	c.elapsed += r.Elapsed
	c.latencies = append(c.latencies, r.Latencies...)
	c.addErrors(r.Errors)
	c.addUse(u, u.PeakRSS > 0)
}

// result turns the cell into a report row. CPU per request divides by every request the proxy
// answered in the windows, refused ones included, since it spent CPU on them too.
func (c *cell) result() Result {
	r := Result{Target: c.target, Workload: c.workload, Skipped: c.skipped, Errors: c.errors, Requests: c.requests}
	if c.skipped != "" {
		return r
	}
	var nerr int64
	for _, v := range c.errors {
		nerr += v
	}
	r.ErrorCount = nerr
	served := c.requests + nerr
	if c.events > 0 {
		served = c.events
	}
	r.Seconds = c.elapsed.Seconds()
	if r.Seconds > 0 {
		r.RPS = float64(c.requests) / r.Seconds
	}
	lat := Summarize(c.latencies)
	r.P50, r.P99, r.P999 = micros(lat.P50), micros(lat.P99), micros(lat.P999)
	r.Samples = lat.N
	if served > 0 {
		if c.hasProxy {
			v := micros(c.use.ProxyCPU) / float64(served)
			r.ProxyCPU = &v
		}
		r.APICPU = micros(c.use.APICPU) / float64(served)
		r.ClientCPU = micros(c.use.ClientCPU) / float64(served)
	}
	if c.requests > 0 && c.bytes > 0 {
		r.BytesPerReq = float64(c.bytes) / float64(c.requests)
	}
	if c.hasProxy {
		r.PeakRSS = c.use.PeakRSS
	}
	r.Extra = c.extra
	if c.use.Wall > 0 {
		r.BackgroundCPU = 100 * c.background.Seconds() / c.use.Wall.Seconds() / float64(runtime.NumCPU())
	}
	return r
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
