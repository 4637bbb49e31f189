// Package compact shrinks Kubernetes JSON for devices whose whole answer, headers included, must fit a
// small receive buffer (the reference firmware keeps 2,047 bytes). It removes what is bookkeeping for
// other clients and never useful to a device, at any depth (list items and watch events too):
//
//   - metadata.managedFields, the server-side apply record (about 40% of a Node written by a kubelet);
//   - the metadata.annotations entry kubectl.kubernetes.io/last-applied-configuration, kubectl's copy of
//     what it last applied: a ConfigMap written by `kubectl apply` carries its whole data twice, once
//     in the object and once in that annotation;
//   - insignificant whitespace.
//
// It does so in one pass over the bytes without decoding into Go values: a decode/re-encode
// through map[string]any costs about 20 times as much CPU (BenchmarkAppend vs BenchmarkDecodeReencode:
// 10 vs 190 µs for a 2.7 KB Node), most of what forwarding the whole request costs.
//
// The scanner is a strict JSON validator. Anything that is not exactly one valid JSON value is reported as
// an error and the caller forwards the original bytes untouched: a device gets the API server's answer or a
// smaller equivalent of it, never a corrupted one.
package compact

import (
	"errors"
	"fmt"
)

// MaxDepth bounds nesting so hostile or broken upstream data cannot exhaust the stack. Kubernetes objects
// nest a few dozen levels at most.
const MaxDepth = 256

// ErrInvalid reports that the input is not a single valid JSON value.
var ErrInvalid = errors.New("invalid JSON")

// ErrTooDeep reports nesting deeper than MaxDepth.
var ErrTooDeep = errors.New("JSON nested too deeply")

// LastAppliedAnnotation is the annotation `kubectl apply` keeps its copy of the applied object in.
const LastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

var (
	keyMetadata      = []byte(`"metadata"`)
	keyManagedFields = []byte(`"managedFields"`)
	keyAnnotations   = []byte(`"annotations"`)
	keyLastApplied   = []byte(`"` + LastAppliedAnnotation + `"`)
)

// place is where in an object the scanner is: what a member of the object at hand may be dropped for.
type place uint8

const (
	plain       place = iota
	metadata          // the object under a "metadata" key: managedFields goes
	annotations       // the object under metadata's "annotations": the last-applied entry goes
)

// Append appends src to dst with every metadata.managedFields member and every last-applied annotation
// removed (at any depth, so items of lists and objects embedded in watch events are compacted too) and
// whitespace dropped. On error dst is returned with its original length: the caller keeps src.
//
// The API server writes compact JSON, so almost all of src goes out as it came in: the scanner
// validates token by token but copies whole runs of bytes, cutting a run only where something is
// dropped (whitespace, a dropped member and its comma). A Node is then a few copies, not one per token.
func Append(dst, src []byte) ([]byte, error) {
	s := scanner{src: src, dst: dst}
	s.skipSpace()
	s.from = s.pos
	if err := s.value(plain, 0); err != nil {
		return dst[:len(dst):len(dst)], fmt.Errorf("compacting at byte %d: %w", s.pos, err)
	}
	s.flush()
	s.skipSpace()
	if s.pos != len(src) {
		return dst[:len(dst):len(dst)], fmt.Errorf("compacting at byte %d: %w: data after the value", s.pos, ErrInvalid)
	}
	return s.dst, nil
}

// scanner validates src from pos on. src[from:pos] is the run scanned but not yet copied to dst; it is
// copied (flush) before anything is cut out, and never when discard is set (a value being dropped, or a
// scanner that only validates).
type scanner struct {
	src     []byte
	dst     []byte
	pos     int
	from    int
	discard bool
}

// flush copies the pending run to dst.
func (s *scanner) flush() {
	if !s.discard && s.pos > s.from {
		s.dst = append(s.dst, s.src[s.from:s.pos]...)
	}
	s.from = s.pos
}

// skipSpace drops whitespace at pos: the run before it is copied first. It is small enough to be
// inlined at every token, where the API server's compact JSON almost never has any.
func (s *scanner) skipSpace() {
	if s.pos < len(s.src) && s.src[s.pos] <= ' ' {
		s.dropSpace()
	}
}

func (s *scanner) dropSpace() {
	if !isSpace(s.src[s.pos]) {
		return
	}
	s.flush()
	for s.pos < len(s.src) && isSpace(s.src[s.pos]) {
		s.pos++
	}
	s.from = s.pos
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// value scans one JSON value; at says where it is, when it is an object (see place).
func (s *scanner) value(at place, depth int) error {
	if s.pos >= len(s.src) {
		return ErrInvalid
	}
	switch c := s.src[s.pos]; {
	case c == '{':
		return s.object(at, depth+1)
	case c == '[':
		return s.array(depth + 1)
	case c == '"':
		return s.skipString()
	case c == '-' || (c >= '0' && c <= '9'):
		return s.skipNumber()
	default:
		for _, lit := range [...]string{"true", "false", "null"} {
			if len(s.src)-s.pos >= len(lit) && string(s.src[s.pos:s.pos+len(lit)]) == lit {
				s.pos += len(lit)
				return nil
			}
		}
		return ErrInvalid
	}
}

// object scans an object. In a plain object nothing is dropped, so its commas stay in the run. In
// metadata or its annotations a member may be dropped: there each comma is cut from the run and written
// again only before a member that is kept and follows another kept one.
func (s *scanner) object(at place, depth int) error {
	if depth > MaxDepth {
		return ErrTooDeep
	}
	s.pos++ // '{'
	s.skipSpace()
	if s.pos < len(s.src) && s.src[s.pos] == '}' {
		s.pos++
		return nil
	}
	written := 0
	for {
		if s.pos >= len(s.src) || s.src[s.pos] != '"' {
			return ErrInvalid
		}
		keyStart := s.pos
		if err := s.skipString(); err != nil {
			return err
		}
		key := s.src[keyStart:s.pos]
		child, drop := plain, false
		switch {
		case at == plain:
		case at == metadata && string(key) == string(keyManagedFields) || at == annotations && string(key) == string(keyLastApplied):
			drop = true
		case at == metadata && string(key) == string(keyAnnotations):
			child = annotations
		}
		if string(key) == string(keyMetadata) {
			child = metadata
		}
		discard := s.discard
		if at != plain && (drop || written > 0) {
			keyEnd := s.pos
			s.pos = keyStart
			s.flush() // the run before the key; its comma, if any, was cut
			s.pos = keyEnd
			if drop {
				s.discard = true // the member's key, value and whitespace are scanned, not copied
			} else if !discard {
				s.dst = append(s.dst, ',')
			}
		}
		s.skipSpace()
		if s.pos >= len(s.src) || s.src[s.pos] != ':' {
			return ErrInvalid
		}
		s.pos++
		s.skipSpace()
		if err := s.value(child, depth); err != nil {
			return err
		}
		if drop {
			s.discard = discard
			s.from = s.pos
		} else {
			written++
		}
		s.skipSpace()
		if s.pos >= len(s.src) {
			return ErrInvalid
		}
		switch s.src[s.pos] {
		case ',':
			if at != plain {
				s.flush()
				s.pos++
				s.from = s.pos
			} else {
				s.pos++
			}
			s.skipSpace()
		case '}':
			s.pos++
			return nil
		default:
			return ErrInvalid
		}
	}
}

func (s *scanner) array(depth int) error {
	if depth > MaxDepth {
		return ErrTooDeep
	}
	s.pos++ // '['
	s.skipSpace()
	if s.pos < len(s.src) && s.src[s.pos] == ']' {
		s.pos++
		return nil
	}
	for {
		if err := s.value(plain, depth); err != nil {
			return err
		}
		s.skipSpace()
		if s.pos >= len(s.src) {
			return ErrInvalid
		}
		switch s.src[s.pos] {
		case ',':
			s.pos++
			s.skipSpace()
		case ']':
			s.pos++
			return nil
		default:
			return ErrInvalid
		}
	}
}

// skipString advances past a string starting at s.pos, validating escapes and rejecting raw control
// characters, as encoding/json does.
func (s *scanner) skipString() error {
	src, i := s.src, s.pos+1 // past the opening quote; locals keep the loop in registers
	for i < len(src) {
		c := src[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		switch c {
		case '"':
			s.pos = i + 1
			return nil
		case '\\':
			if i+1 >= len(src) {
				s.pos = i
				return ErrInvalid
			}
			switch src[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(src) {
					s.pos = i
					return ErrInvalid
				}
				for _, h := range src[i+2 : i+6] {
					if !isHex(h) {
						s.pos = i
						return ErrInvalid
					}
				}
				i += 6
			default:
				s.pos = i
				return ErrInvalid
			}
		default: // a raw control character
			s.pos = i
			return ErrInvalid
		}
	}
	s.pos = i
	return ErrInvalid
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// skipNumber advances past a number in JSON's grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) skipNumber() error {
	if s.src[s.pos] == '-' {
		s.pos++
	}
	switch {
	case s.pos < len(s.src) && s.src[s.pos] == '0':
		s.pos++
	case s.pos < len(s.src) && s.src[s.pos] >= '1' && s.src[s.pos] <= '9':
		s.digits()
	default:
		return ErrInvalid
	}
	if s.pos < len(s.src) && s.src[s.pos] == '.' {
		s.pos++
		if s.digits() == 0 {
			return ErrInvalid
		}
	}
	if s.pos < len(s.src) && (s.src[s.pos] == 'e' || s.src[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.src) && (s.src[s.pos] == '+' || s.src[s.pos] == '-') {
			s.pos++
		}
		if s.digits() == 0 {
			return ErrInvalid
		}
	}
	return nil
}

func (s *scanner) digits() int {
	n := 0
	for s.pos < len(s.src) && s.src[s.pos] >= '0' && s.src[s.pos] <= '9' {
		s.pos++
		n++
	}
	return n
}
