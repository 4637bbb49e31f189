package device

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseJSONAgreesWithEncodingJSON(t *testing.T) {
	tests := []string{
		`{}`, `[]`, `""`, `0`, `-0`, `1.5e+3`, `true`, `false`, `null`, ` {"a" : [1, 2, {"b":null}] } `,
		`{"a":"\u00e9\ud83d\ude00\n\"\\\/"}`, `[1,]`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{1:2}`, `[1 2]`, `01`, `1.`,
		`.5`, `-`, `1e`, `tru`, `nul`, `"abc`, "\"a\x01b\"", `"\x"`, `"\u12"`, `{"a":1}}`, `[[[]]`, `]`, ``, ` `,
		`{"a":[{"b":[{"c":{}}]}]}`, `"\ud800"`, `[1e10,-2.5E-3,0.0]`, "[1]\n", `{"a":1} x`,
	}
	for _, in := range tests {
		t.Run(in, func(t *testing.T) {
			_, err := parseJSON([]byte(in))
			if got, want := err == nil, json.Valid([]byte(in)); got != want {
				t.Errorf("parseJSON(%q) valid = %v (err %v), want %v", in, got, err, want)
			}
		})
	}
}

func TestParseJSONDepthLimit(t *testing.T) {
	deep := strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1)
	if _, err := parseJSON([]byte(deep)); !errors.Is(err, errDepth) {
		t.Errorf("got %v, want errDepth", err)
	}
	ok := strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth)
	if _, err := parseJSON([]byte(ok)); err != nil {
		t.Errorf("depth %d: got %v, want nil", maxDepth, err)
	}
}

func TestGetAndStr(t *testing.T) {
	v, err := parseJSON([]byte(`{"metadata":{"name":"p\u0069co","n":42,"labels":{"a\"b":"c"}},"items":[{"x":1},{"x":2}],"s":"tab\there"}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path []string
		want string
		ok   bool
	}{
		{[]string{"metadata", "name"}, "pico", true},
		{[]string{"metadata", "labels", `a"b`}, "c", true},
		{[]string{"s"}, "tab\there", true},
		{[]string{"metadata", "n"}, "", false},
		{[]string{"missing"}, "", false},
		{[]string{"items", "x"}, "", false},
	}
	for _, tt := range tests {
		got, ok := v.get(tt.path...).str()
		if got != tt.want || ok != tt.ok {
			t.Errorf("get(%v).str() = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
	if n, ok := v.get("metadata", "n").int(); !ok || n != 42 {
		t.Errorf("got %d, %v; want 42, true", n, ok)
	}
	var xs []int64
	v.get("items").each(func(_, item jval) bool {
		n, _ := item.get("x").int()
		xs = append(xs, n)
		return true
	})
	if len(xs) != 2 || xs[0] != 1 || xs[1] != 2 {
		t.Errorf("items x: got %v, want [1 2]", xs)
	}
}

// An escape after a non-ASCII character used to come back undecoded: the check for a plain string
// stopped at the first non-ASCII byte and asked only whether the rest was valid UTF-8 (found by
// FuzzParseJSON; the input is in its seed corpus).
func TestStrEscapeAfterNonASCII(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string // a JSON string
		want string
	}{
		{"backspace after 2-byte character", "\"\xc3\xa9\\b\"", "\u00e9\b"},
		{"long key", "\"" + strings.Repeat("k", 40) + "\xd7\x90" + strings.Repeat("k", 40) + "\\b\"", strings.Repeat("k", 40) + "\u05d0" + strings.Repeat("k", 40) + "\b"},
		{"every escape after a 3-byte character", "\"\xe2\x82\xac\\b\\f\\n\\r\\t\\\"\\\\\\/\\u0041\"", "\u20ac\b\f\n\r\t\"\\/A"},
		{"non-ASCII without escapes", "\"\xc3\xa9t\xc3\xa9\"", "\u00e9t\u00e9"},
		{"escape before non-ASCII", "\"\\n\xc3\xa9\"", "\n\u00e9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := parseJSON([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := v.str(); !ok || got != tc.want {
				t.Errorf("str(%s): got %q, %v; want %q, true", tc.in, got, ok, tc.want)
			}
			if !v.equal(tc.want) {
				t.Errorf("equal(%s, %q): got false, want true", tc.in, tc.want)
			}
			obj, err := parseJSON([]byte("{" + tc.in + ":1}"))
			if err != nil {
				t.Fatal(err)
			}
			if n, ok := obj.get(tc.want).int(); !ok || n != 1 {
				t.Errorf("get(%q) in {%s:1}: got %d, %v; want 1, true", tc.want, tc.in, n, ok)
			}
		})
	}
}

// walk visits every value under v, as a fuzz target's way to reach every
// code path of each and str.
func walk(v jval, depth int, visit func(jval)) {
	visit(v)
	if depth > maxDepth {
		return
	}
	v.each(func(k, val jval) bool {
		if k != nil {
			visit(k)
		}
		walk(val, depth+1, visit)
		return true
	})
}

func FuzzParseJSON(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/api/*.json")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{`{"a":"\ud83d\ude00"}`, `[1,2,[3]]`, `"\u0000"`, `{"":{"":""}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseJSON(b)
		if errors.Is(err, errDepth) {
			return
		}
		if got, want := err == nil, json.Valid(b); got != want {
			t.Fatalf("parseJSON(%q) valid = %v (%v), encoding/json says %v", b, got, err, want)
		}
		if err != nil {
			return
		}
		walk(v, 0, func(x jval) {
			if x.kind() != '"' {
				return
			}
			got, ok := x.str()
			var want string
			if jerr := json.Unmarshal(x, &want); jerr != nil || !ok || got != want {
				t.Fatalf("str(%s) = %q, %v; encoding/json gives %q (%v)", x, got, ok, want, jerr)
			}
			if !x.equal(want) {
				t.Fatalf("equal(%s, %q) = false", x, want)
			}
		})
	})
}
