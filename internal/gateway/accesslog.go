package gateway

import (
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/picogate/picogate/device"
)

// accessLog writes the access log straight to Config.AccessLogWriter: each line is formatted into a
// pooled buffer, field by field, with nothing allocated, and written whole in one Write. Through slog
// the same line cost a request about a tenth of the gateway's own CPU (its Record, the caller's program
// counter it always takes, a generic walk over the attributes). The layout is exactly what slog's
// TextHandler (or JSONHandler) writes for the same attributes, so nothing that reads the log can tell
// the difference; TestAccessLineMatchesSlog holds it to that.
type accessLog struct {
	mu   sync.Mutex // one Write at a time, as slog's handlers do
	w    io.Writer
	json bool
	bufs sync.Pool // *[]byte
}

func newAccessLog(w io.Writer, json bool) *accessLog {
	return &accessLog{w: w, json: json, bufs: sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}}
}

// accessLine is one request's access-log line: the attributes logRequest gives, in that order.
type accessLine struct {
	time     time.Time
	level    slog.Level
	client   netip.Addr
	method   string
	path     string
	status   int
	bytes    int64
	duration time.Duration
	identity string
	route    string
	query    string // omitted when empty
	watch    bool   // omitted when false
	auditID  string // omitted when empty
	reason   string // omitted when empty
}

func (l *accessLog) write(e *accessLine) {
	bp := l.bufs.Get().(*[]byte)
	b := (*bp)[:0]
	if l.json {
		b = e.appendJSON(b)
	} else {
		b = e.appendText(b)
	}
	l.mu.Lock()
	_, _ = l.w.Write(b)
	l.mu.Unlock()
	if cap(b) <= 16<<10 {
		*bp = b
		l.bufs.Put(bp)
	}
}

// attrs is the line as slog attributes, for the AccessLogger path.
func (e *accessLine) attrs() []slog.Attr {
	attrs := []slog.Attr{
		slog.String("client", e.client.String()),
		slog.String("method", e.method),
		slog.String("path", e.path),
		slog.Int("status", e.status),
		slog.Int64("bytes", e.bytes),
		slog.Duration("duration", e.duration),
		slog.String("identity", e.identity),
		slog.String("route", e.route),
	}
	if e.query != "" {
		attrs = append(attrs, slog.String("query", e.query))
	}
	if e.watch {
		attrs = append(attrs, slog.Bool("watch", true))
	}
	if e.auditID != "" {
		attrs = append(attrs, slog.String("audit_id", e.auditID))
	}
	if e.reason != "" {
		attrs = append(attrs, slog.String("reason", e.reason))
	}
	return attrs
}

// appendText is the line as slog.TextHandler writes it: key=value pairs, a value quoted only when it
// needs to be, the time to the millisecond and a duration as time.Duration prints it.
func (e *accessLine) appendText(b []byte) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	b = append(b, "time="...)
	n := len(b)
	b = e.time.Round(0).Truncate(time.Millisecond).Add(time.Millisecond/10).AppendFormat(b, time.RFC3339Nano)
	b = append(b[:n+prefixLen], b[n+prefixLen+1:]...) // three digits after the point, as slog
	b = append(b, " level="...)
	b = append(b, e.level.String()...)
	b = append(b, " msg=request client="...)
	var addr [64]byte
	b = appendTextString(b, addr[:0], e.client)
	b = append(b, " method="...)
	b = appendTextValue(b, e.method)
	b = append(b, " path="...)
	b = appendTextValue(b, e.path)
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, " bytes="...)
	b = strconv.AppendInt(b, e.bytes, 10)
	b = append(b, " duration="...)
	b = append(b, e.duration.String()...)
	b = append(b, " identity="...)
	b = appendTextValue(b, e.identity)
	b = append(b, " route="...)
	b = appendTextValue(b, e.route)
	if e.query != "" {
		b = append(b, " query="...)
		b = appendTextValue(b, e.query)
	}
	if e.watch {
		b = append(b, " watch=true"...)
	}
	if e.auditID != "" {
		b = append(b, " audit_id="...)
		b = appendTextValue(b, e.auditID)
	}
	if e.reason != "" {
		b = append(b, " reason="...)
		b = appendTextValue(b, e.reason)
	}
	return append(b, '\n')
}

// appendTextString appends the address as a text value, formatted in scratch.
func appendTextString(b, scratch []byte, a netip.Addr) []byte {
	scratch = appendAddr(scratch, a)
	if textNeedsQuoting(scratch) {
		return strconv.AppendQuote(b, string(scratch))
	}
	return append(b, scratch...)
}

// appendAddr appends a as netip.Addr.String writes it ("invalid IP" for the zero Addr: a request
// refused before its address was read).
func appendAddr(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(b, "invalid IP"...)
	}
	return a.AppendTo(b)
}

func appendTextValue(b []byte, s string) []byte {
	if textNeedsQuoting(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

// textNeedsQuoting is slog's rule for a text value: empty, or holding a space, '=', '"', a control
// character, or a rune that is invalid, a space or not printable.
func textNeedsQuoting[S string | []byte](s S) bool {
	if len(s) == 0 {
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c == ' ' || c == '=' || c == '"' || c < 0x20 {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:]))
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// appendJSON is the line as slog.JSONHandler writes it: the time to the nanosecond, a duration in
// nanoseconds, strings escaped as slog escapes them.
func (e *accessLine) appendJSON(b []byte) []byte {
	b = append(b, `{"time":"`...)
	b = e.time.Round(0).AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"`...)
	b = append(b, e.level.String()...)
	b = append(b, `","msg":"request","client":`...)
	var addr [64]byte
	b = appendJSONString(b, string(appendAddr(addr[:0], e.client)))
	b = append(b, `,"method":`...)
	b = appendJSONString(b, e.method)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, e.path)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, e.bytes, 10)
	b = append(b, `,"duration":`...)
	b = strconv.AppendInt(b, int64(e.duration), 10)
	b = append(b, `,"identity":`...)
	b = appendJSONString(b, e.identity)
	b = append(b, `,"route":`...)
	b = appendJSONString(b, e.route)
	if e.query != "" {
		b = append(b, `,"query":`...)
		b = appendJSONString(b, e.query)
	}
	if e.watch {
		b = append(b, `,"watch":true`...)
	}
	if e.auditID != "" {
		b = append(b, `,"audit_id":`...)
		b = appendJSONString(b, e.auditID)
	}
	if e.reason != "" {
		b = append(b, `,"reason":`...)
		b = appendJSONString(b, e.reason)
	}
	return append(b, "}\n"...)
}

// appendJSONString is the one JSON string escaper, the device package's (byte for byte slog's).
func appendJSONString(b []byte, s string) []byte { return device.AppendJSONString(b, s) }
