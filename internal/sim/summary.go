package sim

import (
	"context"
	"fmt"
	"time"
)

// failingWindow is how recent a device's last error must be for the live
// summary to count it as failing.
const failingWindow = 15 * time.Second

// summarize rewrites one status line every SummaryInterval until ctx ends.
func (s *Simulator) summarize(ctx context.Context, start time.Time) {
	t := time.NewTicker(s.cfg.SummaryInterval)
	defer t.Stop()
	var lastReq uint64
	last := start
	for {
		select {
		case <-ctx.Done():
			fmt.Fprint(s.cfg.Summary, "\r\x1b[K")
			return
		case now := <-t.C:
			line, req := s.summaryLine(now, start, lastReq, now.Sub(last))
			lastReq, last = req, now
			fmt.Fprint(s.cfg.Summary, "\r\x1b[K"+line)
		}
	}
}

func (s *Simulator) summaryLine(now, start time.Time, lastReq uint64, dt time.Duration) (string, uint64) {
	r := s.report(now.Sub(start))
	failing := 0
	for _, d := range r.PerDevice {
		if !d.LastErrorAt.IsZero() && now.Sub(d.LastErrorAt) < failingWindow {
			failing++
		}
	}
	rate := float64(r.Requests-lastReq) / max(dt.Seconds(), 1e-3)
	line := fmt.Sprintf("picosim %s | %d devices: %d ready, %d failing | %.1f req/s | errors %s | %s",
		r.Mode, r.Devices, r.DevicesReady, failing, rate, formatErrors(r.Errors), now.Sub(start).Round(time.Second))
	if r.Mode == ModeFirmware {
		line += fmt.Sprintf(" | oversize %d chunked %d", r.OversizeResponses, r.ChunkedResponses)
	}
	return line, r.Requests
}
