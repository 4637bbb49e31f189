package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// profileTargets fetches a CPU profile of each picogate target while it serves the GET workload, in
// an extra window after the measured rounds (so profiling never skews a reported figure). It needs
// net/http/pprof's /debug/pprof/profile on picogate's admin port; without one, the report says so.
func (b *Bench) profileTargets(ctx context.Context, targets []*target, rep *Report) error {
	cfg := &b.cfg
	if err := os.MkdirAll(cfg.CPUProfile, 0o755); err != nil {
		return fmt.Errorf("profile folder: %w", err)
	}
	for _, t := range targets {
		if t.adminAddr == "" {
			continue
		}
		b.progress("profiling " + t.name)
		file := filepath.Join(cfg.CPUProfile, t.name+"-get.pprof")
		secs := max(int(cfg.Duration.Seconds()), 1)
		got := make(chan error, 1)
		go func() { got <- fetchProfile(ctx, t.adminAddr, secs, file) }()
		runLoad(ctx, loadSpec{Endpoint: t.endpoint, Conns: cfg.Conns, Duration: time.Duration(secs)*time.Second + time.Second,
			Request: t.requests(WorkloadGet)})
		note := ProfileNote{Target: t.name, File: file, Note: fmt.Sprintf("GET workload, %d s, %d connections; saved as %s (git-ignored)", secs, cfg.Conns, file)}
		if err := <-got; err != nil {
			note.File, note.Note = "", err.Error()
		} else if note.Top, err = topOfProfile(ctx, file, 15); err != nil {
			note.Note += "; " + err.Error()
		}
		rep.Profiles = append(rep.Profiles, note)
	}
	return nil
}

func fetchProfile(ctx context.Context, admin string, secs int, file string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
	defer cancel()
	url := "http://" + admin + "/debug/pprof/profile?seconds=" + strconv.Itoa(secs)
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetching the CPU profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("no CPU profile: picogate's admin port answered %d to /debug/pprof/profile (%s)", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("saving the CPU profile: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("saving the CPU profile: %w", err)
	}
	return f.Close()
}

// topOfProfile is `go tool pprof -top` of a profile: its summary lines and the n functions with the
// most CPU of their own, for the report to say what the time goes to.
func topOfProfile(ctx context.Context, file string, n int) ([]string, error) {
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount="+strconv.Itoa(n), file).Output()
	if err != nil {
		return nil, fmt.Errorf("summarising the profile with go tool pprof: %w", err)
	}
	return pprofTop(string(out)), nil
}

// pprofTop keeps the lines of pprof -top output worth reading: the Duration and Showing summaries,
// the column header, and the function rows.
func pprofTop(out string) []string {
	var keep []string
	rows := false
	for line := range strings.SplitSeq(strings.TrimRight(out, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "Duration:"), strings.HasPrefix(line, "Showing nodes"):
			keep = append(keep, strings.TrimSpace(line))
		case strings.Contains(line, "flat%") && strings.Contains(line, "cum%"):
			rows = true
			keep = append(keep, line)
		case rows && strings.TrimSpace(line) != "":
			keep = append(keep, line)
		}
	}
	return keep
}
