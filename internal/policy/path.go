package policy

import (
	"errors"
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
		return errors.Join(ErrAmbiguousPath, errors.New("path must start with /"))
	}
	if raw == "/" {
		return nil
	}
	if raw[len(raw)-1] == '/' {
		return errors.Join(ErrAmbiguousPath, errors.New("trailing slash"))
	}
	for i := 0; i < len(raw); i++ {
		if !pathByte(raw[i]) {
			if raw[i] == '%' {
				return errors.Join(ErrAmbiguousPath, errors.New("percent-encoding in path"))
			}
			return errors.Join(ErrAmbiguousPath, errors.New("character not allowed in path"))
		}
	}
	for seg := range strings.SplitSeq(raw[1:], "/") {
		switch {
		case seg == "":
			return errors.Join(ErrAmbiguousPath, errors.New("empty path segment (//)"))
		case seg == "." || seg == "..":
			return errors.Join(ErrAmbiguousPath, errors.New("dot segment"))
		case seg[len(seg)-1] == '.':
			return errors.Join(ErrAmbiguousPath, errors.New("segment ends with a dot"))
		}
	}
	return nil
}

func pathByte(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '/'
}
