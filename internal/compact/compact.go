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
func Append(dst, src []byte) ([]byte, error) {
	s := scanner{src: src, dst: dst}
	s.skipSpace()
	if err := s.value(plain, 0); err != nil {
		return dst[:len(dst):len(dst)], fmt.Errorf("compacting at byte %d: %w", s.pos, err)
	}
	s.skipSpace()
	if s.pos != len(src) {
		return dst[:len(dst):len(dst)], fmt.Errorf("compacting at byte %d: %w: data after the value", s.pos, ErrInvalid)
	}
	return s.dst, nil
}

type scanner struct {
	src []byte
	dst []byte
	pos int
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.src) {
		switch s.src[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// value copies one JSON value; at says where it is, when it is an object (see place).
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
		start := s.pos
		if err := s.skipString(); err != nil {
			return err
		}
		s.dst = append(s.dst, s.src[start:s.pos]...)
		return nil
	case c == '-' || (c >= '0' && c <= '9'):
		start := s.pos
		if err := s.skipNumber(); err != nil {
			return err
		}
		s.dst = append(s.dst, s.src[start:s.pos]...)
		return nil
	default:
		for _, lit := range [...]string{"true", "false", "null"} {
			if len(s.src)-s.pos >= len(lit) && string(s.src[s.pos:s.pos+len(lit)]) == lit {
				s.dst = append(s.dst, lit...)
				s.pos += len(lit)
				return nil
			}
		}
		return ErrInvalid
	}
}

func (s *scanner) object(at place, depth int) error {
	if depth > MaxDepth {
		return ErrTooDeep
	}
	s.pos++ // '{'
	s.dst = append(s.dst, '{')
	s.skipSpace()
	if s.pos < len(s.src) && s.src[s.pos] == '}' {
		s.pos++
		s.dst = append(s.dst, '}')
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
		s.skipSpace()
		if s.pos >= len(s.src) || s.src[s.pos] != ':' {
			return ErrInvalid
		}
		s.pos++
		s.skipSpace()
		if at == metadata && string(key) == string(keyManagedFields) || at == annotations && string(key) == string(keyLastApplied) {
			// Validate and drop: scan into a throwaway position of dst.
			mark := len(s.dst)
			if err := s.value(plain, depth); err != nil {
				return err
			}
			s.dst = s.dst[:mark]
		} else {
			if written > 0 {
				s.dst = append(s.dst, ',')
			}
			s.dst = append(s.dst, key...)
			s.dst = append(s.dst, ':')
			child := plain
			switch {
			case string(key) == string(keyMetadata):
				child = metadata
			case at == metadata && string(key) == string(keyAnnotations):
				child = annotations
			}
			if err := s.value(child, depth); err != nil {
				return err
			}
			written++
		}
		s.skipSpace()
		if s.pos >= len(s.src) {
			return ErrInvalid
		}
		switch s.src[s.pos] {
		case ',':
			s.pos++
			s.skipSpace()
		case '}':
			s.pos++
			s.dst = append(s.dst, '}')
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
	s.dst = append(s.dst, '[')
	s.skipSpace()
	if s.pos < len(s.src) && s.src[s.pos] == ']' {
		s.pos++
		s.dst = append(s.dst, ']')
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
			s.dst = append(s.dst, ',')
			s.skipSpace()
		case ']':
			s.pos++
			s.dst = append(s.dst, ']')
			return nil
		default:
			return ErrInvalid
		}
	}
}

// skipString advances past a string starting at s.pos, validating escapes and rejecting raw control
// characters, as encoding/json does.
func (s *scanner) skipString() error {
	s.pos++ // opening quote
	for s.pos < len(s.src) {
		c := s.src[s.pos]
		switch {
		case c == '"':
			s.pos++
			return nil
		case c == '\\':
			if s.pos+1 >= len(s.src) {
				return ErrInvalid
			}
			switch s.src[s.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos += 2
			case 'u':
				if s.pos+6 > len(s.src) {
					return ErrInvalid
				}
				for _, h := range s.src[s.pos+2 : s.pos+6] {
					if !isHex(h) {
						return ErrInvalid
					}
				}
				s.pos += 6
			default:
				return ErrInvalid
			}
		case c < 0x20:
			return ErrInvalid
		default:
			s.pos++
		}
	}
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
