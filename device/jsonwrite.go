package device

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Request bodies are built by appending to a byte slice the caller owns and
// reuses, so a steady-state heartbeat allocates nothing and a board can size
// one buffer for its largest body (see docs/device-protocol.md).

const hexDigits = "0123456789abcdef"

// appendStr appends s as a JSON string.
func appendStr(b []byte, s string) []byte { return AppendJSONString(b, s) }

// AppendJSONString appends s as a JSON string, escaped as encoding/json and log/slog's JSONHandler escape
// it (control characters, quote and backslash; invalid UTF-8 as U+FFFD; U+2028 and U+2029), allocating
// nothing beyond b's growth. The gateway's access log uses it too, so there is one escaper.
func AppendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendKey appends `"k":`; k is a constant field name needing no escapes.
func appendKey(b []byte, k string) []byte {
	b = append(b, '"')
	b = append(b, k...)
	return append(b, '"', ':')
}

// appendField appends `"k":"v",` with v escaped.
func appendField(b []byte, k, v string) []byte {
	b = appendKey(b, k)
	b = appendStr(b, v)
	return append(b, ',')
}

// appendIntField appends `"k":n,`.
func appendIntField(b []byte, k string, n int64) []byte {
	b = appendKey(b, k)
	b = strconv.AppendInt(b, n, 10)
	return append(b, ',')
}

// appendBoolField appends `"k":true,` or false.
func appendBoolField(b []byte, k string, v bool) []byte {
	b = appendKey(b, k)
	b = strconv.AppendBool(b, v)
	return append(b, ',')
}

// appendTimeField appends a metav1.Time (RFC 3339, whole seconds, UTC).
func appendTimeField(b []byte, k string, t time.Time) []byte {
	b = appendKey(b, k)
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, "2006-01-02T15:04:05Z")
	return append(b, '"', ',')
}

// appendMicroTimeField appends a metav1.MicroTime, as Lease.spec.renewTime is.
func appendMicroTimeField(b []byte, k string, t time.Time) []byte {
	b = appendKey(b, k)
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z")
	return append(b, '"', ',')
}

// closeObj replaces a trailing comma with c (or appends c), so builders can
// end every member with a comma and not track which one is last.
func closeObj(b []byte, c byte) []byte {
	if n := len(b); n > 0 && b[n-1] == ',' {
		b[n-1] = c
		return b
	}
	return append(b, c)
}
