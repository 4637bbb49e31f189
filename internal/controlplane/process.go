package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"
)

// errAddrInUse marks a process that died because another process took its port between
// freePorts and its bind; Start retries once with new ports.
var errAddrInUse = errors.New("address already in use")

// process is one running control plane binary.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has exited and been reaped
	err     error         // cmd.Wait's result, set before done is closed
	killed  atomic.Bool   // we stopped it on purpose
	healthy atomic.Bool   // it passed its health check: from then on an exit is news
}

// startProcess runs bin with args in its own process group, output appended to logPath. The
// process is killed when lifetime is done. onExit runs after it has exited, whatever the reason.
func startProcess(lifetime context.Context, dir, name, bin string, args []string, logPath string, onExit func(*process)) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening %s log: %w", name, err)
	}
	defer logFile.Close() // the child has its own descriptor
	fmt.Fprintf(logFile, "\n==== %s starting %s %s\n", time.Now().Format(time.RFC3339Nano), name, strings.Join(args, " "))

	cmd := exec.CommandContext(lifetime, bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
		onExit(p)
	}()
	return p, nil
}

// stop kills the process's whole group and waits until it has been reaped.
func (p *process) stop() {
	p.killed.Store(true)
	select {
	case <-p.done:
		return // already reaped: its pid may belong to someone else now
	default:
	}
	_ = killGroup(p.cmd.Process.Pid)
	<-p.done
}

// exited reports whether the process has exited, and why.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// waitHealthy polls check until it succeeds, the process exits, ctx is done or timeout passes.
// Every failure names the process and carries the end of its log.
func (p *process) waitHealthy(parent context.Context, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		checkCtx, cancelCheck := context.WithTimeout(ctx, 2*time.Second)
		last := check(checkCtx)
		cancelCheck()
		if last == nil {
			return nil
		}
		// An exit is looked at first: a check may have hung on a port someone else holds, and
		// a select with the ticker also ready could otherwise go round again.
		if exited, _ := p.exited(); exited {
			return p.exitError()
		}
		select {
		case <-p.done:
			return p.exitError()
		case <-ctx.Done():
			if exited, _ := p.exited(); exited {
				return p.exitError()
			}
			if err := parent.Err(); err != nil {
				return fmt.Errorf("waiting for %s: %w", p.name, err)
			}
			return fmt.Errorf("%s not healthy after %s (last check: %v); end of %s:\n%s",
				p.name, timeout, last, p.logPath, tailFile(p.logPath, tailLines))
		case <-tick.C:
		}
	}
}

// exitError explains an early exit; it wraps errAddrInUse when that was the cause.
func (p *process) exitError() error {
	tail := tailFile(p.logPath, tailLines)
	err := fmt.Errorf("%s exited before it was healthy (%v); end of %s:\n%s", p.name, p.err, p.logPath, tail)
	if strings.Contains(tail, "address already in use") {
		return errors.Join(errAddrInUse, err)
	}
	return err
}

// tailLines is how much of a log an error carries: enough for the fatal message and its cause.
const tailLines = 40

// tailFile returns the last n lines of the file at path, or a note saying why it cannot.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const window = 256 << 10 // enough for 40 long klog lines
	if fi, err := f.Stat(); err == nil && fi.Size() > window {
		if _, err := f.Seek(-window, io.SeekEnd); err != nil {
			return fmt.Sprintf("(reading log: %v)", err)
		}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(reading log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
