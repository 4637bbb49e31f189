package registry

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/picogate/picogate/device"
)

// nameInputs covers each branch of the name rule and its edges.
var nameInputs = []string{
	"pico-1", "a", "0", "pico-1.lab.example", "pico--1", "", "Pico-1", "pico_1", "pico/1", "picö", "-pico",
	"pico-", ".pico", "pico.", "pico..lab", "pico-.lab", "pico.-lab", "..", "a.b-c.d",
	strings.Repeat("a", 253), strings.Repeat("a", 254), strings.Repeat("a", 63) + "." + strings.Repeat("b", 63),
}

// device.ValidateNodeName, picogate's one name rule, is Kubernetes's rule for a Node name.
func TestValidateNodeNameIsKubernetesRule(t *testing.T) {
	for _, in := range nameInputs {
		t.Run(in, func(t *testing.T) {
			got, want := device.ValidateNodeName(in) == nil, len(validation.IsDNS1123Subdomain(in)) == 0
			if got != want {
				t.Errorf("ValidateNodeName(%q): got ok=%v, want ok=%v (IsDNS1123Subdomain)", in, got, want)
			}
		})
	}
}

func FuzzValidateNodeNameIsKubernetesRule(f *testing.F) {
	for _, in := range nameInputs {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, want := device.ValidateNodeName(in) == nil, len(validation.IsDNS1123Subdomain(in)) == 0
		if got != want {
			t.Errorf("ValidateNodeName(%q): got ok=%v, want ok=%v (IsDNS1123Subdomain)", in, got, want)
		}
	})
}

func TestValidateName(t *testing.T) {
	maxName := 253 - len(SecretPrefix)
	for _, tc := range []struct {
		name, in, want string // want: a substring of the error, "" for none
	}{
		{"valid", "pico-1", ""},
		{"longest that fits the Secret name", strings.Repeat("a", maxName), ""},
		{"too long for the Secret name", strings.Repeat("a", maxName+1), "at most 246 characters"},
		{"empty", "", `invalid device name "": required`},
		{"upper case", "Pico_1", `invalid device name "Pico_1": want lowercase`},
		{"double dot", "a..b", `invalid device name "a..b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateName(tc.in)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("ValidateName(%q): got %v, want no error", tc.in, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("ValidateName(%q): got %v, want an error containing %q", tc.in, err, tc.want)
			}
		})
	}
}
