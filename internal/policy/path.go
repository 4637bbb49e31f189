package policy

import (
	"errors"
	"fmt"
	"strings"
)

// ErrAmbiguousPath reports a request path picogate refuses to interpret. The API server and any proxy in
// between may decode, clean or split such paths differently from picogate; rather than guess, it refuses.
var ErrAmbiguousPath = errors.New("ambiguous request path")

// CheckPath accepts only paths that mean exactly what they say: absolute, no empty, "." or ".." segments,
// no trailing slash, no percent-encoding and only the characters Kubernetes names and API paths use.
// raw is the path as sent on the wire (URL.EscapedPath or the request line's path).
func CheckPath(raw string) error {
	if raw == "" || raw[0] != '/' {
		return fmt.Errorf("%w: path must start with /", ErrAmbiguousPath)
	}
	if raw == "/" {
		return nil
	}
	if raw[len(raw)-1] == '/' {
		return fmt.Errorf("%w: trailing slash", ErrAmbiguousPath)
	}
	for i := 0; i < len(raw); i++ {
		if !pathByte(raw[i]) {
			if raw[i] == '%' {
				return fmt.Errorf("%w: percent-encoding in path", ErrAmbiguousPath)
			}
			return fmt.Errorf("%w: character not allowed in path", ErrAmbiguousPath)
		}
	}
	for seg := range strings.SplitSeq(raw[1:], "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%w: empty path segment (//)", ErrAmbiguousPath)
		case seg == "." || seg == "..":
			return fmt.Errorf("%w: dot segment", ErrAmbiguousPath)
		case seg[len(seg)-1] == '.':
			return fmt.Errorf("%w: segment ends with a dot", ErrAmbiguousPath)
		}
	}
	return nil
}

func pathByte(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '/'
}
