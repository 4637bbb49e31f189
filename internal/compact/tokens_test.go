package compact

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// appendByTokens is Append as it was first written, appending token by token: the oracle that Append,
// which copies whole runs of bytes and only cuts where something is dropped, must match byte for byte
// (TestAppendMatchesTokenByToken, FuzzAppendMatchesTokenByToken).
func appendByTokens(dst, src []byte) ([]byte, error) {
	s := tokenScanner{src: src, dst: dst}
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

type tokenScanner struct {
	src []byte
	dst []byte
	pos int
}

func (s *tokenScanner) skipSpace() {
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
func (s *tokenScanner) value(at place, depth int) error {
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

func (s *tokenScanner) object(at place, depth int) error {
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

func (s *tokenScanner) array(depth int) error {
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
func (s *tokenScanner) skipString() error {
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

// skipNumber advances past a number in JSON's grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *tokenScanner) skipNumber() error {
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

func (s *tokenScanner) digits() int {
	n := 0
	for s.pos < len(s.src) && s.src[s.pos] >= '0' && s.src[s.pos] <= '9' {
		s.pos++
		n++
	}
	return n
}

// equivalenceCases are inputs where copying runs could go wrong: members dropped first, last, in a row
// and alone, whitespace everywhere a run is cut, escapes, and invalid input at each kind of token.
var equivalenceCases = []string{
	`{"metadata":{"managedFields":[1],"managedFields":[2],"name":"a"}}`,
	`{"metadata":{"name":"a","managedFields":[1],"managedFields":[2]}}`,
	`{"metadata":{"name":"a","managedFields":[1],"uid":"u","managedFields":[2],"x":{}}}`,
	`{ "metadata" : { "name" : "a" , "managedFields" : [ 1 ] , "uid" : "u" } , "b" : [ 1 , 2 ] }` + "\n",
	"\t{\"metadata\":{\n\"managedFields\":\n[],\n\"a\":1\n}}\r\n",
	`{"metadata":{"annotations":{"a":"1", "kubectl.kubernetes.io/last-applied-configuration" : "x" ,"b":"2"},"managedFields":[{"metadata":{"managedFields":1}}]}}`,
	`{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"x","kubectl.kubernetes.io/last-applied-configuration":"y"}}}`,
	`{"metadata":{"managed\u0046ields":[1],"name":"a"}}`,
	`[{"metadata":{"managedFields":[]}},{"metadata":{"managedFields":[]}} , {"metadata":{}}]`,
	`{"items":[{"metadata":{"name":"a","managedFields":[{"manager":"m","fieldsV1":{"f:metadata":{}}}]}}],"metadata":{"resourceVersion":"1"}}`,
	`{"metadata":{"managedFields":[1 2]}}`,
	`{"metadata":{"name":"a","managedFields":}}`,
	`{"metadata":{"managedFields":[1],}}`,
	`{"metadata":{"managedFields" [1]}}`,
	`{"a":"b\u00e9\"\\\/\b\f\n\r\t"}`,
	`{"a":"\u00"}`,
	"{\"a\":\"\x1f\"}",
	`{"a":tru}`,
	`{"a":-}`,
	`{"a":1.}`,
	`{"a":1e}`,
	` 1 `,
	`"s"`,
	`[]`,
	`{}`,
	` `,
}

func TestAppendMatchesTokenByToken(t *testing.T) {
	cases := slices.Clone(equivalenceCases)
	golden, _ := filepath.Glob("testdata/*.input.json")
	for _, g := range golden {
		b, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, string(b))
	}
	for i, in := range cases {
		t.Run(strconv.Itoa(i), func(t *testing.T) { checkSameAsTokens(t, []byte(in)) })
	}
}

func FuzzAppendMatchesTokenByToken(f *testing.F) {
	for _, s := range equivalenceCases {
		f.Add([]byte(s))
	}
	golden, _ := filepath.Glob("testdata/*.input.json")
	for _, g := range golden {
		if b, err := os.ReadFile(g); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, src []byte) { checkSameAsTokens(t, src) })
}

// checkSameAsTokens holds Append to appendByTokens: the same bytes after the same prefix, or the same
// error.
func checkSameAsTokens(t *testing.T, src []byte) {
	t.Helper()
	got, err := Append([]byte("keep:"), src)
	want, wantErr := appendByTokens([]byte("keep:"), src)
	if fmt.Sprint(err) != fmt.Sprint(wantErr) {
		t.Fatalf("error for %q: got %v, want %v", src, err, wantErr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("for %q: got %q, want %q", src, got, want)
	}
}
