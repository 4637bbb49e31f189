package bench

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
)

var (
	logStatus = regexp.MustCompile(`\bstatus=(\d{3})\b`)
	logReason = regexp.MustCompile(`\breason="((?:[^"\\]|\\.)*)"`)
	logRoute  = regexp.MustCompile(`\broute=([a-z0-9-]+)`)
	// logNode finds a device name in a reason, so "rate limit exceeded for node pico-7" counts as one kind.
	logNode = regexp.MustCompile(`\bnode [a-z0-9][a-z0-9.-]*`)
)

// refusals tallies picogate's access log (text format) by "STATUS route: reason" for every answer of
// 429 or 5xx, so a fleet row can say whether errors were the gateway's own refusals (rate limit,
// in-flight cap, upstream timeout) or the API server's answers passed through. Reasons are cut to 80
// characters to keep the keys few.
func refusals(r io.Reader) (map[string]int, error) {
	out := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		m := logStatus.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		code, _ := strconv.Atoi(m[1])
		if code != 429 && code < 500 {
			continue
		}
		key := m[1]
		if rt := logRoute.FindStringSubmatch(line); rt != nil {
			key += " " + rt[1]
		}
		reason := "(no reason: the API server's answer)"
		if rs := logReason.FindStringSubmatch(line); rs != nil {
			reason = rs[1]
		}
		reason = logNode.ReplaceAllString(reason, "node NAME")
		if len(reason) > 80 {
			reason = reason[:80] + "…"
		}
		out[fmt.Sprintf("%s: %s", key, reason)]++
	}
	return out, sc.Err()
}
