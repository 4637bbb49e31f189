package bench

import (
	"strings"
	"testing"
)

func TestParseHandlerCosts(t *testing.T) {
	out := `goos: linux
BenchmarkHandlerSigned/GET_node/token-2         	    2000	     29862 ns/op	     29778 cpu-ns/op	   13006 B/op	      76 allocs/op
BenchmarkHandler                              	    2000	     26253 ns/op	       183.0 bytes-saved/op	    7468 B/op	      64 allocs/op
PASS
`
	got, err := parseHandlerCosts(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []HandlerCost{{"BenchmarkHandlerSigned/GET_node/token", 13006, 76}, {"BenchmarkHandler", 7468, 64}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := parseHandlerCosts(strings.NewReader("FAIL\n")); err == nil {
		t.Error("output without a benchmark: got no error, want one")
	}
}
