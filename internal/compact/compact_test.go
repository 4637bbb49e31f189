package compact

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func TestAppend(t *testing.T) {
	tests := []struct {
		name, in, want string
		wantErr        error
	}{
		{"object without metadata", `{"a":1,"b":[true,false,null]}`, `{"a":1,"b":[true,false,null]}`, nil},
		{"managedFields dropped", `{"kind":"Node","metadata":{"name":"p","managedFields":[{"manager":"x"}],"uid":"u"}}`, `{"kind":"Node","metadata":{"name":"p","uid":"u"}}`, nil},
		{"managedFields first member", `{"metadata":{"managedFields":[],"name":"p"}}`, `{"metadata":{"name":"p"}}`, nil},
		{"managedFields only member", `{"metadata":{"managedFields":[{"a":{"b":"}"}}]}}`, `{"metadata":{}}`, nil},
		{"managedFields outside metadata kept", `{"spec":{"managedFields":1}}`, `{"spec":{"managedFields":1}}`, nil},
		{"last-applied annotation dropped", `{"kind":"ConfigMap","metadata":{"name":"c","annotations":{"a":"1","kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{}}\n","b":"2"}},"data":{}}`, `{"kind":"ConfigMap","metadata":{"name":"c","annotations":{"a":"1","b":"2"}},"data":{}}`, nil},
		{"last-applied annotation the only one", `{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"x"}}}`, `{"metadata":{"annotations":{}}}`, nil},
		{"last-applied key outside metadata.annotations kept", `{"data":{"kubectl.kubernetes.io/last-applied-configuration":"x"},"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"y"}}`, `{"data":{"kubectl.kubernetes.io/last-applied-configuration":"x"},"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"y"}}`, nil},
		{"list items compacted", `{"items":[{"metadata":{"name":"a","managedFields":[1]}},{"metadata":{"managedFields":[2],"name":"b"}}]}`, `{"items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b"}}]}`, nil},
		{"whitespace dropped", "{ \"a\" : [ 1 , 2 ] ,\n\"b\":\t\"x y\" }", `{"a":[1,2],"b":"x y"}`, nil},
		{"escapes kept", `{"s":"a\"b\\c\u00e9\n"}`, `{"s":"a\"b\\c\u00e9\n"}`, nil},
		{"numbers", `[0,-1,1.5,2e10,-3.25E-2]`, `[0,-1,1.5,2e10,-3.25E-2]`, nil},
		{"truncated", `{"metadata":{"name":"p"`, "", ErrInvalid},
		{"trailing garbage", `{"a":1}x`, "", ErrInvalid},
		{"not JSON", `<html>bad gateway</html>`, "", ErrInvalid},
		{"empty", ``, "", ErrInvalid},
		{"leading zero", `[01]`, "", ErrInvalid},
		{"bad escape", `["\x"]`, "", ErrInvalid},
		{"raw control char", "[\"a\x01\"]", "", ErrInvalid},
		{"trailing comma", `{"a":1,}`, "", ErrInvalid},
		{"too deep", strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), "", ErrTooDeep},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("keep:")
			got, err := Append(prefix, []byte(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error: got %v, want %v", err, tt.wantErr)
				}
				if string(got) != "keep:" {
					t.Fatalf("dst after error: got %q, want it unchanged", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("error: got %v, want none", err)
			}
			if string(got) != "keep:"+tt.want {
				t.Errorf("got %s, want keep:%s", got, tt.want)
			}
		})
	}
}

// TestAppendGolden compacts responses recorded from kube-apiserver v1.37.2 (copies of the device
// package's recordings, device/testdata/api).
func TestAppendGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.input.json")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Append(nil, src)
			if err != nil {
				t.Fatalf("compacting: %v", err)
			}
			goldenPath := strings.TrimSuffix(in, ".input.json") + ".golden.json"
			if *update {
				if err := os.WriteFile(goldenPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(goldenPath)
			if err != nil {
				t.Fatalf("reading golden (go test -update writes it): %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got %d bytes, want %d bytes (%s)", len(got), len(want), goldenPath)
			}
			if bytes.Contains(got, []byte("managedFields")) {
				t.Errorf("got managedFields in the output, want none")
			}
			if len(got) >= len(src) {
				t.Errorf("got %d bytes from %d, want fewer", len(got), len(src))
			}
		})
	}
}

// reference is the slow, obviously-right version of Append: decode, delete, re-encode.
func reference(src []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(src))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	strip(v, false)
	return v, nil
}

func strip(v any, inMetadata bool) {
	switch x := v.(type) {
	case map[string]any:
		if inMetadata {
			delete(x, "managedFields")
			if ann, ok := x["annotations"].(map[string]any); ok {
				delete(ann, LastAppliedAnnotation)
			}
		}
		for k, child := range x {
			strip(child, k == "metadata")
		}
	case []any:
		for _, child := range x {
			strip(child, false)
		}
	}
}

func decode(t *testing.T, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("output is not JSON: %v: %q", err, b)
	}
	return v
}

func FuzzAppend(f *testing.F) {
	for _, s := range []string{`{"metadata":{"managedFields":[{}],"name":"x"}}`, `{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}","x":"y"}}}`, `[1,"a",null]`, `{"a":`, `"\u12"`, `-0.0e+1`} {
		f.Add([]byte(s))
	}
	if golden, _ := filepath.Glob("testdata/*.input.json"); len(golden) > 0 {
		for _, g := range golden {
			if b, err := os.ReadFile(g); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		got, err := Append(nil, src)
		valid := json.Valid(src)
		if errors.Is(err, ErrTooDeep) {
			return
		}
		if (err == nil) != valid {
			t.Fatalf("Append error %v but json.Valid=%v for %q", err, valid, src)
		}
		if err != nil {
			return
		}
		want, rerr := reference(src)
		if rerr != nil {
			t.Fatalf("reference failed on valid input: %v", rerr)
		}
		if g := decode(t, got); !reflect.DeepEqual(g, want) {
			t.Fatalf("got %s, want the value of %q without managedFields", got, src)
		}
	})
}

// BenchmarkAppend and BenchmarkDecodeReencode compare the one-pass scanner with the obvious alternative
// (decode into map[string]any, delete managedFields, encode): the reason the package scans bytes.
func BenchmarkAppend(b *testing.B) {
	in, err := os.ReadFile("testdata/node-status-full.input.json")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	var out []byte
	for b.Loop() {
		if out, err = Append(out[:0], in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeReencode(b *testing.B) {
	in, err := os.ReadFile("testdata/node-status-full.input.json")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		var v map[string]any
		if err := json.Unmarshal(in, &v); err != nil {
			b.Fatal(err)
		}
		if md, ok := v["metadata"].(map[string]any); ok {
			delete(md, "managedFields")
		}
		if _, err := json.Marshal(v); err != nil {
			b.Fatal(err)
		}
	}
}
