package device

import (
	"strings"
	"testing"
)

func TestValidateNodeName(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"simple", "pico-1", true},
		{"one character", "a", true},
		{"digits", "0123", true},
		{"dotted", "pico-1.lab.example", true},
		{"double dash", "pico--1", true},
		{"longest", strings.Repeat("a", MaxNodeNameLen), true},
		{"empty", "", false},
		{"too long", strings.Repeat("a", MaxNodeNameLen+1), false},
		{"upper case", "Pico-1", false},
		{"underscore", "pico_1", false},
		{"slash", "pico/1", false},
		{"space", "pico 1", false},
		{"non-ASCII", "picö", false},
		{"leading dash", "-pico", false},
		{"trailing dash", "pico-", false},
		{"leading dot", ".pico", false},
		{"trailing dot", "pico.", false},
		{"double dot", "pico..lab", false},
		{"dash before dot", "pico-.lab", false},
		{"dash after dot", "pico.-lab", false},
		{"dot-dot path", "..", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateNodeName(tc.in); (err == nil) != tc.ok {
				t.Errorf("ValidateNodeName(%q): got %v, want ok=%v", tc.in, err, tc.ok)
			}
		})
	}
}

func TestValidateNodeNameDoesNotAllocate(t *testing.T) {
	for _, in := range []string{"pico-1.lab", "Pico_1", "", strings.Repeat("a", 300)} {
		if n := testing.AllocsPerRun(100, func() { _ = ValidateNodeName(in) }); n != 0 {
			t.Errorf("ValidateNodeName(%q): got %v allocations, want 0", in, n)
		}
	}
}

// The board's own name is a Node name that also fits its kubernetes.io/hostname label (63 characters).
func TestConfigNameRule(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string // want: a substring of the error, "" for none
	}{
		{"valid", "pico-1", ""},
		{"63 characters", strings.Repeat("a", 63), ""},
		{"64 characters", strings.Repeat("a", 64), "longer than 63 characters"},
		{"empty", "", "name: required"},
		{"bad character", "Pico_1", `name: "Pico_1": want lowercase`},
		{"double dot", "a..b", `name: "a..b": want lowercase`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Config{Name: tc.in, Gateway: "http://gw:6080"}.withDefaults()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("name %q: got %v, want no error", tc.in, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("name %q: got %v, want an error containing %q", tc.in, err, tc.want)
			}
		})
	}
}
