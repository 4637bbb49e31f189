package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ProcSample is what one read of /proc says about one process.
type ProcSample struct {
	CPU   time.Duration // user + system time so far
	RSS   int64         // resident set size, bytes
	PPID  int
	Comm  string
	Valid bool
}

// parseStat reads utime, stime, ppid and comm from the text of /proc/PID/stat. comm may hold spaces and
// parentheses, so the fields are counted from the last ')'.
func parseStat(b []byte, tick time.Duration) (ProcSample, error) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return ProcSample{}, errors.New("no (comm) in stat")
	}
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return ProcSample{}, fmt.Errorf("stat has %d fields after comm, want at least 13", len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseUint(f[11], 10, 64)
	st, err3 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return ProcSample{}, fmt.Errorf("parsing stat: %w", err)
	}
	return ProcSample{CPU: time.Duration(ut+st) * tick, PPID: ppid, Comm: string(b[open+1 : end]), Valid: true}, nil
}

// parseVmRSS returns VmRSS from the text of /proc/PID/status, in bytes; 0 for a process without one
// (a zombie, a kernel thread).
func parseVmRSS(b []byte) (int64, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q: want N kB", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS line %q: %w", line, err)
		}
		return kb << 10, nil
	}
	return 0, nil
}

// parseClockTick finds AT_CLKTCK in the bytes of /proc/self/auxv (native-endian 64-bit pairs); the
// kernel's USER_HZ is what /proc/PID/stat counts in, and it is 100 almost everywhere but not by law.
func parseClockTick(auxv []byte) (time.Duration, bool) {
	const atClkTck, atNull = 17, 0
	for i := 0; i+16 <= len(auxv); i += 16 {
		k, v := binary.NativeEndian.Uint64(auxv[i:]), binary.NativeEndian.Uint64(auxv[i+8:])
		if k == atNull {
			break
		}
		if k == atClkTck && v > 0 {
			return time.Second / time.Duration(v), true
		}
	}
	return 0, false
}

// Proc reads /proc (or a copy of it, for tests) under Root.
type Proc struct {
	Root string        // "/proc" by default
	Tick time.Duration // one USER_HZ tick
}

// NewProc returns a reader of the real /proc with the kernel's clock tick.
func NewProc() *Proc {
	p := &Proc{Root: "/proc", Tick: 10 * time.Millisecond}
	if b, err := os.ReadFile("/proc/self/auxv"); err == nil {
		if t, ok := parseClockTick(b); ok {
			p.Tick = t
		}
	}
	return p
}

// Sample reads one process. A process that has gone returns a zero, invalid sample and no error.
func (p *Proc) Sample(pid int) (ProcSample, error) {
	dir := p.Root + "/" + strconv.Itoa(pid)
	b, err := os.ReadFile(dir + "/stat")
	if errors.Is(err, os.ErrNotExist) {
		return ProcSample{}, nil
	}
	if err != nil {
		return ProcSample{}, fmt.Errorf("reading process %d: %w", pid, err)
	}
	s, err := parseStat(b, p.Tick)
	if err != nil {
		return ProcSample{}, fmt.Errorf("process %d: %w", pid, err)
	}
	b, err = os.ReadFile(dir + "/status")
	if errors.Is(err, os.ErrNotExist) {
		return ProcSample{}, nil
	}
	if err != nil {
		return ProcSample{}, fmt.Errorf("reading process %d: %w", pid, err)
	}
	if s.RSS, err = parseVmRSS(b); err != nil {
		return ProcSample{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return s, nil
}

// Total sums CPU and RSS over pids (a process that has gone counts nothing).
func (p *Proc) Total(pids []int) (cpu time.Duration, rss int64, err error) {
	for _, pid := range pids {
		s, err := p.Sample(pid)
		if err != nil {
			return 0, 0, err
		}
		cpu += s.CPU
		rss += s.RSS
	}
	return cpu, rss, nil
}

// Children lists the live processes whose parent is pid (nginx's workers).
func (p *Proc) Children(pid int) ([]int, error) {
	ents, err := os.ReadDir(p.Root)
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	var out []int
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(p.Root + "/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		if s, err := parseStat(b, p.Tick); err == nil && s.PPID == pid {
			out = append(out, child)
		}
	}
	return out, nil
}

// parseCPUBusy returns the busy time of all CPUs together from the text of /proc/stat (its first,
// aggregate "cpu" line): user, nice, system, irq, softirq and steal; idle and iowait are not busy.
func parseCPUBusy(b []byte, tick time.Duration) (time.Duration, error) {
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: first line %q is not the aggregate cpu line", line)
	}
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += v
	}
	return time.Duration(busy) * tick, nil
}

// MachineBusy is the CPU time all processes on the machine have used since boot.
func (p *Proc) MachineBusy() (time.Duration, error) {
	b, err := os.ReadFile(p.Root + "/stat")
	if err != nil {
		return 0, fmt.Errorf("reading machine CPU: %w", err)
	}
	return parseCPUBusy(b, p.Tick)
}
