package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// HandlerCost is what the gateway's request path allocates per request, from its handler benchmarks
// (go test -bench -benchmem on internal/gateway): exact, whatever the machine's load.
type HandlerCost struct {
	Benchmark   string `json:"benchmark"`
	BytesPerOp  int64  `json:"bytes_per_op"`
	AllocsPerOp int64  `json:"allocs_per_op"`
}

// handlerBenchmarks are the request path through the whole handler, with the access log on: the
// firmware's GET and status PATCH, token and hmac.
const handlerBenchmarks = "^(BenchmarkHandler|BenchmarkHandlerSigned)$"

// handlerCosts runs the handler benchmarks from the repository root (2,000 requests each).
func handlerCosts(ctx context.Context) ([]HandlerCost, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", handlerBenchmarks, "-benchmem", "-benchtime", "2000x", "-count", "1", "./internal/gateway/")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go test -bench on the handler: %w: %s", err, lastLine(out.String()))
	}
	return parseHandlerCosts(&out)
}

// parseHandlerCosts reads go test -benchmem output: "BenchmarkX/sub-2  2000  123 ns/op ... 456 B/op  7 allocs/op".
func parseHandlerCosts(r io.Reader) ([]HandlerCost, error) {
	var costs []HandlerCost
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		c := HandlerCost{Benchmark: trimProcs(f[0])}
		for i := 1; i+1 < len(f); i++ {
			switch f[i+1] {
			case "B/op":
				c.BytesPerOp, _ = strconv.ParseInt(f[i], 10, 64)
			case "allocs/op":
				c.AllocsPerOp, _ = strconv.ParseInt(f[i], 10, 64)
			}
		}
		costs = append(costs, c)
	}
	if len(costs) == 0 {
		return nil, fmt.Errorf("go test -bench printed no benchmark")
	}
	return costs, sc.Err()
}

// trimProcs drops go test's -GOMAXPROCS suffix ("BenchmarkHandler-2").
func trimProcs(name string) string {
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			return name[:i]
		}
	}
	return name
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// readNotes is the notes file's text, or "" when there is none.
func readNotes(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
