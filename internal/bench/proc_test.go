package bench

import (
	"encoding/binary"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// testdata/proc is a small copy of /proc: an nginx master (4242), a worker whose comm holds ") (" to
// trip naive parsers (4243), and a zombie child without memory lines (4244), plus the machine's stat.
func testProc() *Proc { return &Proc{Root: "testdata/proc", Tick: 10 * time.Millisecond} }

func TestProcSample(t *testing.T) {
	tests := []struct {
		pid  int
		want ProcSample
	}{
		{4242, ProcSample{CPU: 18 * time.Second, RSS: 5120 << 10, PPID: 1, Comm: "nginx", Valid: true}},
		{4243, ProcSample{CPU: 3000 * time.Second, RSS: 18432 << 10, PPID: 4242, Comm: "nginx: worker) (x", Valid: true}},
		{4244, ProcSample{CPU: 100 * time.Millisecond, RSS: 0, PPID: 4242, Comm: "nginx", Valid: true}},
		{9999, ProcSample{}}, // gone
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.pid), func(t *testing.T) {
			got, err := testProc().Sample(tt.pid)
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestProcTotalAndChildren(t *testing.T) {
	p := testProc()
	kids, err := p.Children(4242)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(kids)
	if !slices.Equal(kids, []int{4243, 4244}) {
		t.Errorf("children: got %v, want [4243 4244]", kids)
	}
	cpu, rss, err := p.Total(append([]int{4242}, kids...))
	if err != nil {
		t.Fatal(err)
	}
	if want := 18*time.Second + 3000*time.Second + 100*time.Millisecond; cpu != want {
		t.Errorf("cpu: got %v, want %v", cpu, want)
	}
	if want := int64(5120+18432) << 10; rss != want {
		t.Errorf("rss: got %d, want %d", rss, want)
	}
}

func TestMachineBusy(t *testing.T) {
	got, err := testProc().MachineBusy()
	if err != nil {
		t.Fatal(err)
	}
	// user 236064 + nice 0 + system 34704 + irq 0 + softirq 1033 + steal 668 ticks; idle and iowait not.
	if want := time.Duration(236064+34704+1033+668) * 10 * time.Millisecond; got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestParseStatErrors(t *testing.T) {
	for _, in := range []string{"", "1 nginx S 1", "1 (nginx) S 1 2 3", "1 (x) S one 1 1 0 -1 0 0 0 0 0 a b"} {
		if _, err := parseStat([]byte(in), time.Millisecond); err == nil {
			t.Errorf("parseStat(%q): got no error, want one", in)
		}
	}
	if _, err := parseVmRSS([]byte("VmRSS:\t12 MB\n")); err == nil {
		t.Error("parseVmRSS with MB: got no error, want one")
	}
}

func TestParseClockTick(t *testing.T) {
	aux := func(pairs ...uint64) []byte {
		b := make([]byte, 8*len(pairs))
		for i, v := range pairs {
			binary.NativeEndian.PutUint64(b[8*i:], v)
		}
		return b
	}
	tests := []struct {
		name   string
		auxv   []byte
		want   time.Duration
		wantOK bool
	}{
		{"100 Hz", aux(6, 4096, 17, 100, 0, 0), 10 * time.Millisecond, true},
		{"250 Hz", aux(17, 250, 0, 0), 4 * time.Millisecond, true},
		{"absent", aux(6, 4096, 0, 0), 0, false},
		{"after the end", aux(0, 0, 17, 100), 0, false},
		{"truncated", aux(6)[:4], 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseClockTick(tt.auxv)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("got %v %v, want %v %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// TestNewProcReadsItself checks the real /proc reader on this test process, where /proc exists.
func TestNewProcReadsItself(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc here")
	}
	s, err := NewProc().Sample(os.Getpid())
	if err != nil || !s.Valid || s.RSS <= 0 {
		t.Errorf("got %+v, %v, want a valid sample with memory", s, err)
	}
}

func TestSumCounter(t *testing.T) {
	text := `# HELP apiserver_request_total Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",verb="GET"} 10
apiserver_request_total{code="201",verb="POST"} 2.5
apiserver_request_total_other 99
apiserver_request_duration_seconds_count{verb="GET"} 7
apiserver_request_total 1
`
	got, _, err := sumCounter(text, "apiserver_request_total")
	if err != nil || got != 13.5 {
		t.Errorf("got %v, %v, want 13.5", got, err)
	}
	if _, _, err := sumCounter("apiserver_request_total{a=\"b\"} x\n", "apiserver_request_total"); err == nil {
		t.Error("bad value: got no error, want one")
	}
}
