package policy

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrAmbiguousQuery reports a query string picogate refuses to interpret (a parameter given twice, or
// that does not decode), for the same reason as ErrAmbiguousPath.
var ErrAmbiguousQuery = errors.New("ambiguous query")

// Query is a parsed query string that remembers whether it was unambiguous.
type Query struct {
	raw string
}

// ParseQuery checks raw (URL.RawQuery) and returns it for lookups: every parameter must decode, appear
// at most once and use no ';' separator.
func ParseQuery(raw string) (Query, error) {
	if strings.IndexByte(raw, ';') >= 0 {
		return Query{}, fmt.Errorf("%w: ';' in query", ErrAmbiguousQuery)
	}
	var seen [16]string // small queries are the norm; fall back to a map beyond
	var more map[string]struct{}
	n := 0
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, _, _ := strings.Cut(part, "=")
		key, err := unescape(k)
		if err != nil {
			return Query{}, fmt.Errorf("%w: %w", ErrAmbiguousQuery, err)
		}
		if _, v, _ := strings.Cut(part, "="); v != "" {
			if _, err := unescape(v); err != nil {
				return Query{}, fmt.Errorf("%w: %w", ErrAmbiguousQuery, err)
			}
		}
		for _, s := range seen[:min(n, len(seen))] {
			if s == key {
				return Query{}, fmt.Errorf("%w: parameter %s given twice", ErrAmbiguousQuery, strconvQuote(key))
			}
		}
		if _, dup := more[key]; dup {
			return Query{}, fmt.Errorf("%w: parameter %s given twice", ErrAmbiguousQuery, strconvQuote(key))
		}
		if n < len(seen) {
			seen[n] = key
		} else {
			if more == nil {
				more = make(map[string]struct{})
			}
			more[key] = struct{}{}
		}
		n++
	}
	return Query{raw: raw}, nil
}

// Get returns the decoded value of key and whether it is present.
func (q Query) Get(key string) (string, bool) {
	for part := range strings.SplitSeq(q.raw, "&") {
		k, v, _ := strings.Cut(part, "=")
		if k != key {
			if strings.ContainsAny(k, "%+") {
				if dk, _ := unescape(k); dk == key {
					dv, _ := unescape(v)
					return dv, true
				}
			}
			continue
		}
		dv, _ := unescape(v)
		return dv, true
	}
	return "", false
}

// Watch reports whether the API server will treat the request as a watch. It reads boolean parameters
// the way the API server does: present and not "false" or "0" (any case) means true, even when empty.
func (q Query) Watch() bool {
	v, ok := q.Get("watch")
	return ok && !strings.EqualFold(v, "false") && v != "0"
}

func unescape(s string) (string, error) {
	if !strings.ContainsAny(s, "%+") {
		return s, nil
	}
	return url.QueryUnescape(s)
}

func strconvQuote(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return `"` + strings.ReplaceAll(s, `"`, `'`) + `"`
}
