package gateway

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"
)

// slogLine is the line slog's own handler writes for e.
func slogLine(t testing.TB, e *accessLine, json bool) string {
	var buf bytes.Buffer
	var h slog.Handler = slog.NewTextHandler(&buf, nil)
	if json {
		h = slog.NewJSONHandler(&buf, nil)
	}
	rec := slog.NewRecord(e.time, e.level, "request", 0)
	rec.AddAttrs(e.attrs()...)
	if err := h.Handle(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func accessLines() []accessLine {
	at := time.Date(2026, 12, 3, 11, 15, 49, 123456789, time.UTC)
	return []accessLine{
		{time: at, level: slog.LevelInfo, client: netip.MustParseAddr("192.168.1.20"), method: "GET", path: "/api/v1/nodes/pico-1", status: 200,
			bytes: 1895, duration: 1234567 * time.Nanosecond, identity: "system:node:pico-1", route: "node-get", auditID: "4a4d2f5e-3c8b"},
		{time: at.Add(time.Second), level: slog.LevelWarn, client: netip.MustParseAddr("fe80::1%eth0"), method: "PATCH", path: "/api/v1/nodes/pico 1=\"x\"",
			status: 503, duration: 4500 * time.Millisecond, identity: "-", route: "none", query: "watch=1&fieldSelector=spec.nodeName%3Dpico-1",
			watch: true, reason: "upstream: timeout \\ \n\t\r \x01 \u2028 \xff é 日本"},
		{time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("X", 3600)), level: slog.LevelInfo, client: netip.MustParseAddr("::ffff:10.0.0.1"),
			method: "", path: "", status: 499, bytes: -1, duration: 0, identity: "", route: "=", reason: "ü\u00a0"},
		{time: at, duration: 3*time.Hour + 2*time.Minute + 1500*time.Microsecond, route: "a\u200bb", identity: "x\x7fy"},
		{time: at, duration: 999 * time.Nanosecond, path: "<html>&amp;", query: "a=b c"},
	}
}

// TestAccessLineMatchesSlog: the gateway's own access-log lines are byte for byte what slog's text and
// JSON handlers write for the same attributes, so nothing reading the log can tell them apart.
func TestAccessLineMatchesSlog(t *testing.T) {
	for i, e := range accessLines() {
		for _, json := range []bool{false, true} {
			var buf bytes.Buffer
			newAccessLog(&buf, json).write(&e)
			if want := slogLine(t, &e, json); buf.String() != want {
				t.Errorf("line %d json=%v:\n got %q\nwant %q", i, json, buf.String(), want)
			}
		}
	}
}

// TestAccessLineAllocatesNothing: a line is formatted and written with no allocation.
func TestAccessLineAllocatesNothing(t *testing.T) {
	e := accessLines()[0]
	for _, json := range []bool{false, true} {
		l := newAccessLog(discard{}, json)
		l.write(&e)
		if n := testing.AllocsPerRun(100, func() { l.write(&e) }); n != 0 {
			t.Errorf("json=%v: got %v allocations per line, want 0", json, n)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// FuzzAccessLine holds the lines to slog's for any path, query, reason, method and identity a request
// could bring.
func FuzzAccessLine(f *testing.F) {
	for _, e := range accessLines() {
		f.Add(e.method, e.path, e.query, e.reason, e.identity, int64(e.duration))
	}
	f.Fuzz(func(t *testing.T, method, path, query, reason, identity string, d int64) {
		e := accessLines()[0]
		e.method, e.path, e.query, e.reason, e.identity, e.duration = method, path, query, reason, identity, time.Duration(d)
		for _, json := range []bool{false, true} {
			var buf bytes.Buffer
			newAccessLog(&buf, json).write(&e)
			if want := slogLine(t, &e, json); buf.String() != want {
				t.Errorf("json=%v:\n got %q\nwant %q", json, buf.String(), want)
			}
		}
	})
}
