package bench

import (
	"os"
	"sync"
	"time"
)

// usage is what /proc says one window cost.
type usage struct {
	ProxyCPU  time.Duration // the target's processes
	APICPU    time.Duration // kube-apiserver
	ClientCPU time.Duration // this process: the load generator itself
	EtcdCPU   time.Duration
	// MachineCPU is every process's CPU on the machine, and Wall the window's length: what is left
	// after the bench's own processes is other work on the machine, the run's noise.
	MachineCPU time.Duration
	Wall       time.Duration
	PeakRSS    int64 // the target's processes, summed, peak of the samples
	at         time.Time
}

// background is the CPU the window saw from processes outside the bench.
func (u usage) background() time.Duration {
	return max(u.MachineCPU-u.ProxyCPU-u.APICPU-u.EtcdCPU-u.ClientCPU, 0)
}

// meter reads the target's, the API server's and its own CPU at a window's bounds, and samples the
// target's RSS every 100 ms in between.
type meter struct {
	p        *Proc
	pids     func() []int
	procs    []int // pids at the window's start
	apiPID   int
	etcdPID  int
	start    usage
	end      usage
	peak     int64
	mu       sync.Mutex
	stopOnce func()
	done     chan struct{}
}

func (l *lab) meter(pids func() []int) *meter {
	return &meter{p: l.cfg.proc, pids: pids, apiPID: l.apiPID, etcdPID: l.etcdPID}
}

func (m *meter) read() usage {
	u := usage{at: time.Now()}
	u.ProxyCPU, u.PeakRSS, _ = m.p.Total(m.procs)
	u.APICPU, _, _ = m.p.Total([]int{m.apiPID})
	u.EtcdCPU, _, _ = m.p.Total([]int{m.etcdPID})
	u.ClientCPU, _, _ = m.p.Total([]int{os.Getpid()})
	u.MachineCPU, _ = m.p.MachineBusy()
	return u
}

// window is a loadSpec.Window: open starts the sampler, close stops it.
func (m *meter) window(open bool) {
	if open {
		// Looked up once per window: finding nginx's workers scans /proc, too costly to repeat every
		// sample (and a worker does not change within a window).
		m.procs = m.pids()
		m.start = m.read()
		m.peak = m.start.PeakRSS
		stop := make(chan struct{})
		m.done = make(chan struct{})
		m.stopOnce = sync.OnceFunc(func() { close(stop) })
		go m.sample(stop)
		return
	}
	m.stopOnce()
	<-m.done
	m.end = m.read()
}

func (m *meter) sample(stop chan struct{}) {
	defer close(m.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			if _, rss, err := m.p.Total(m.procs); err == nil {
				m.mu.Lock()
				m.peak = max(m.peak, rss)
				m.mu.Unlock()
			}
		}
	}
}

// used returns the window's cost (after window(false)).
func (m *meter) used() usage {
	end := m.end
	m.mu.Lock()
	defer m.mu.Unlock()
	return usage{
		ProxyCPU:   end.ProxyCPU - m.start.ProxyCPU,
		APICPU:     end.APICPU - m.start.APICPU,
		ClientCPU:  end.ClientCPU - m.start.ClientCPU,
		EtcdCPU:    end.EtcdCPU - m.start.EtcdCPU,
		MachineCPU: end.MachineCPU - m.start.MachineCPU,
		Wall:       end.at.Sub(m.start.at),
		PeakRSS:    max(m.peak, end.PeakRSS),
	}
}
