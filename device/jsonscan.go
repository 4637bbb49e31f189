package device

import (
	"errors"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds nesting so a hostile response cannot exhaust the small stack
// of a microcontroller; Kubernetes objects nest well under 20 levels.
const maxDepth = 64

var (
	errSyntax  = errors.New("json: syntax error")
	errDepth   = errors.New("json: nested too deeply")
	errNoValue = errors.New("json: no value")
)

// jval is one JSON value, kept as the raw bytes of the response it came from.
// Looking a field up scans the bytes again instead of building a tree: the few
// fields the agent needs are found without allocating, which is what a board
// with 264 KiB of RAM can afford and what TinyGo compiles without reflection.
type jval []byte

// parseJSON checks that b holds exactly one JSON value (surrounding space
// allowed) and returns it.
func parseJSON(b []byte) (jval, error) {
	start := skipSpace(b, 0)
	end, err := skipValue(b, start)
	if err != nil {
		return nil, err
	}
	if skipSpace(b, end) != len(b) {
		return nil, errSyntax
	}
	return jval(b[start:end]), nil
}

// kind reports the first byte of the value: '{', '[', '"', 't', 'f', 'n',
// or '0' for any number; 0 for a missing value.
func (v jval) kind() byte {
	if len(v) == 0 {
		return 0
	}
	switch c := v[0]; c {
	case '{', '[', '"', 't', 'f', 'n':
		return c
	}
	return '0'
}

// get follows object keys and returns the value found, or nil when any step
// is missing or not an object.
func (v jval) get(keys ...string) jval {
	for _, k := range keys {
		var found jval
		v.each(func(key, val jval) bool {
			if key.equal(k) {
				found = val
				return false
			}
			return true
		})
		if found == nil {
			return nil
		}
		v = found
	}
	return v
}

// each calls fn for every member of an object (key as a raw JSON string) or
// every element of an array (key nil) until fn returns false. v must already be
// valid JSON (it came from parseJSON), so errors cannot occur here.
func (v jval) each(fn func(key, val jval) bool) {
	if len(v) < 2 || (v[0] != '{' && v[0] != '[') {
		return
	}
	obj := v[0] == '{'
	i := skipSpace(v, 1)
	for i < len(v) && v[i] != '}' && v[i] != ']' {
		var key jval
		if obj {
			end, err := skipString(v, i)
			if err != nil {
				return
			}
			key = v[i:end]
			i = skipSpace(v, end)
			i = skipSpace(v, i+1) // ':'
		}
		end, err := skipValue(v, i)
		if err != nil {
			return
		}
		if !fn(key, v[i:end]) {
			return
		}
		i = skipSpace(v, end)
		if i < len(v) && v[i] == ',' {
			i = skipSpace(v, i+1)
		}
	}
}

// equal compares a raw JSON string with s, without allocating when the JSON
// string has no escapes (always the case for Kubernetes field names).
func (v jval) equal(s string) bool {
	if len(v) < 2 || v[0] != '"' {
		return false
	}
	raw := v[1 : len(v)-1]
	if plainString(raw) {
		return string(raw) == s
	}
	u, ok := v.str()
	return ok && u == s
}

// plainString reports whether a JSON string's contents need no decoding:
// no escapes and valid UTF-8. Every byte is looked at for a backslash, since
// an escape may follow non-ASCII text.
func plainString(raw []byte) bool {
	ascii := true
	for _, c := range raw {
		if c == '\\' {
			return false
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	return ascii || utf8.Valid(raw)
}

// str returns the value of a JSON string, unescaped.
func (v jval) str() (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	raw := v[1 : len(v)-1]
	if plainString(raw) {
		return string(raw), true
	}
	return unescape(raw)
}

// strOr returns the string value, or def when v is not a string.
func (v jval) strOr(def string) string {
	if s, ok := v.str(); ok {
		return s
	}
	return def
}

// int returns the value of an integral JSON number.
func (v jval) int() (int64, bool) {
	if v.kind() != '0' {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}

func unescape(raw []byte) (string, bool) {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c >= utf8.RuneSelf {
			// Invalid UTF-8 becomes U+FFFD byte by byte, as in encoding/json.
			r, size := utf8.DecodeRune(raw[i:])
			out = utf8.AppendRune(out, r)
			i += size - 1
			continue
		}
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(raw) {
			return "", false
		}
		switch raw[i] {
		case '"', '\\', '/':
			out = append(out, raw[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, n := decodeU(raw[i+1:])
			if n == 0 {
				return "", false
			}
			i += n
			out = utf8.AppendRune(out, r)
		default:
			return "", false
		}
	}
	return string(out), true
}

// decodeU decodes the hex digits after a \u (and a following \uXXXX low
// surrogate when the first is a high one), returning the rune and how many
// bytes were used. Unpaired surrogates become U+FFFD, as encoding/json does.
func decodeU(b []byte) (rune, int) {
	r, ok := hex4(b)
	if !ok {
		return 0, 0
	}
	if utf16.IsSurrogate(r) {
		if len(b) >= 10 && b[4] == '\\' && b[5] == 'u' {
			if r2, ok := hex4(b[6:]); ok {
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					return dec, 10
				}
			}
		}
		return utf8.RuneError, 4
	}
	return r, 4
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue validates the JSON value starting at b[i] and returns the index
// just past it. Nesting is tracked in a fixed array, not by recursion.
func skipValue(b []byte, i int) (int, error) {
	var stack [maxDepth]byte // '{' or '['
	depth := 0
	for {
		if i >= len(b) {
			return 0, errNoValue
		}
		// One value.
		switch c := b[i]; {
		case c == '{' || c == '[':
			if depth == maxDepth {
				return 0, errDepth
			}
			stack[depth] = c
			depth++
			i = skipSpace(b, i+1)
			if i < len(b) && ((c == '{' && b[i] == '}') || (c == '[' && b[i] == ']')) {
				depth--
				i++
				break
			}
			if c == '{' {
				var err error
				if i, err = skipKey(b, i); err != nil {
					return 0, err
				}
			}
			continue
		case c == '"':
			end, err := skipString(b, i)
			if err != nil {
				return 0, err
			}
			i = end
		case c == '-' || (c >= '0' && c <= '9'):
			end, err := skipNumber(b, i)
			if err != nil {
				return 0, err
			}
			i = end
		case c == 't':
			if !hasLit(b, i, "true") {
				return 0, errSyntax
			}
			i += 4
		case c == 'f':
			if !hasLit(b, i, "false") {
				return 0, errSyntax
			}
			i += 5
		case c == 'n':
			if !hasLit(b, i, "null") {
				return 0, errSyntax
			}
			i += 4
		default:
			return 0, errSyntax
		}
		// After a value: close containers or move to the next element.
	after:
		for depth > 0 {
			i = skipSpace(b, i)
			if i >= len(b) {
				return 0, errSyntax
			}
			open := stack[depth-1]
			switch {
			case b[i] == ',':
				i = skipSpace(b, i+1)
				if open == '{' {
					var err error
					if i, err = skipKey(b, i); err != nil {
						return 0, err
					}
				}
				break after
			case (open == '{' && b[i] == '}') || (open == '[' && b[i] == ']'):
				depth--
				i++
			default:
				return 0, errSyntax
			}
		}
		if depth == 0 {
			return i, nil
		}
	}
}

// skipKey skips `"key" :` and the space after it.
func skipKey(b []byte, i int) (int, error) {
	if i >= len(b) || b[i] != '"' {
		return 0, errSyntax
	}
	end, err := skipString(b, i)
	if err != nil {
		return 0, err
	}
	i = skipSpace(b, end)
	if i >= len(b) || b[i] != ':' {
		return 0, errSyntax
	}
	return skipSpace(b, i+1), nil
}

func skipString(b []byte, i int) (int, error) {
	if i >= len(b) || b[i] != '"' {
		return 0, errSyntax
	}
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, nil
		case c < 0x20:
			return 0, errSyntax
		case c == '\\':
			i++
			if i >= len(b) {
				return 0, errSyntax
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if _, ok := hex4(b[i+1:]); !ok {
					return 0, errSyntax
				}
				i += 4
			default:
				return 0, errSyntax
			}
		}
	}
	return 0, errSyntax
}

func skipNumber(b []byte, i int) (int, error) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = skipDigits(b, i)
	default:
		return 0, errSyntax
	}
	if i < len(b) && b[i] == '.' {
		j := skipDigits(b, i+1)
		if j == i+1 {
			return 0, errSyntax
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := skipDigits(b, i)
		if j == i {
			return 0, errSyntax
		}
		i = j
	}
	return i, nil
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

func hasLit(b []byte, i int, lit string) bool {
	return len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit
}
