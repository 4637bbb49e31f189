package compact

import (
	"bytes"
	"strings"
	"testing"
)

func TestEventWriter(t *testing.T) {
	ev1 := `{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"a","managedFields":[{"m":"}{"}]}}}`
	ev2 := `{"type":"MODIFIED","object":{"kind":"Pod","metadata":{"name":"b"}}}`
	want := `{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"a"}}}` + "\n" + ev2 + "\n"
	stream := ev1 + "\n" + ev2 + "\n"

	tests := []struct {
		name  string
		chunk int
	}{
		{"whole", len(stream)},
		{"byte by byte", 1},
		{"seven", 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			w := NewEventWriter(&out, 1<<20)
			for i := 0; i < len(stream); i += tt.chunk {
				if _, err := w.Write([]byte(stream[i:min(i+tt.chunk, len(stream))])); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if out.String() != want {
				t.Errorf("got %q, want %q", out.String(), want)
			}
		})
	}
}

func TestEventWriterEmitsEachEventWhenComplete(t *testing.T) {
	var out bytes.Buffer
	w := NewEventWriter(&out, 1<<20)
	ev := `{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"7"}}}` + "\n"
	if _, err := w.Write([]byte(ev[:10])); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 {
		t.Fatalf("got %q before the event was complete, want nothing", out.String())
	}
	if _, err := w.Write([]byte(ev[10:])); err != nil {
		t.Fatal(err)
	}
	if out.String() != ev {
		t.Fatalf("got %q, want %q", out.String(), ev)
	}
}

func TestEventWriterPassesThroughBeyondLimit(t *testing.T) {
	var out bytes.Buffer
	w := NewEventWriter(&out, 64)
	big := `{"type":"ADDED","object":{"metadata":{"managedFields":[` + strings.Repeat(`"x",`, 40) + `"y"]}}}` + "\n"
	small := `{"type":"DELETED","object":{"metadata":{"managedFields":[1]}}}` + "\n"
	_, _ = w.Write([]byte(big))
	_, _ = w.Write([]byte(small))
	_ = w.Close()
	if out.String() != big+small {
		t.Errorf("got %q, want the stream untouched after an oversized event", out.String())
	}
}

func TestEventWriterKeepsInvalidEvent(t *testing.T) {
	var out bytes.Buffer
	w := NewEventWriter(&out, 1<<20)
	_, _ = w.Write([]byte(`{"type":"ADDED","object":{"a":tru}}` + "\n"))
	_ = w.Close()
	if got, want := out.String(), `{"type":"ADDED","object":{"a":tru}}`+"\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func FuzzEventWriter(f *testing.F) {
	f.Add([]byte(`{"type":"ADDED","object":{"metadata":{"managedFields":[]}}}`+"\n"), 3)
	f.Add([]byte(`{"a":"\"}"}{"b":[]}`), 1)
	f.Fuzz(func(t *testing.T, stream []byte, chunk int) {
		if chunk <= 0 || chunk > len(stream)+1 {
			chunk = len(stream) + 1
		}
		var out bytes.Buffer
		w := NewEventWriter(&out, 256)
		for i := 0; i < len(stream); i += chunk {
			if _, err := w.Write(stream[i:min(i+chunk, len(stream))]); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		// Never more than the input plus one newline per event, and a valid stream stays valid.
		if out.Len() > 2*len(stream)+1 {
			t.Fatalf("got %d bytes from %d", out.Len(), len(stream))
		}
	})
}

// TestEventWriterPassesThroughWhatIsNotJSON: text that is not a JSON object or array at the top level
// is framing the writer cannot follow; it and everything after pass through untouched (not split at
// its spaces, not compacted).
func TestEventWriterPassesThroughWhatIsNotJSON(t *testing.T) {
	ev := `{"type":"ADDED","object":{"metadata":{"name":"a","managedFields":[1]}}}`
	compacted := `{"type":"ADDED","object":{"metadata":{"name":"a"}}}` + "\n"
	tests := []struct{ name, rest string }{
		{"text", "this is not json\n" + ev + "\n"},
		{"scalar", `"a string" 12 true` + "\n" + ev + "\n"},
		{"stray bracket", "}\n" + ev + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			w := NewEventWriter(&out, 1<<20)
			_, _ = w.Write([]byte(ev + "\n" + tt.rest))
			_ = w.Close()
			if got, want := out.String(), compacted+"\n"+tt.rest; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}
