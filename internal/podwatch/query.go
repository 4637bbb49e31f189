package podwatch

import (
	"mime"
	"net/url"
	"strconv"
	"strings"
)

// watchQuery is a device's pod watch the hub can serve exactly.
type watchQuery struct {
	rv        string // as sent: "", "0" or a revision
	from      uint64 // rv parsed, when a revision
	bookmarks bool
	timeout   int64 // seconds; 0 when absent
}

// parseWatch reads a device's request query: a watch of exactly the pods of node self, with nothing the
// hub does not implement. Any other parameter, a repeated one, or a value the API server would refuse
// (which it then answers itself) means the watch is relayed.
func parseWatch(rawQuery, self string) (watchQuery, bool) {
	var q watchQuery
	vals, err := url.ParseQuery(rawQuery)
	if err != nil || self == "" {
		return q, false
	}
	watch, selector := false, false
	for k, vs := range vals {
		if len(vs) != 1 {
			return q, false
		}
		v := vs[0]
		switch k {
		case "watch":
			b, err := strconv.ParseBool(v)
			if err != nil || !b {
				return q, false
			}
			watch = true
		case "fieldSelector":
			if v != "spec.nodeName="+self {
				return q, false
			}
			selector = true
		case "resourceVersion":
			q.rv = v
			if v != "" && v != "0" {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil || n == 0 {
					return q, false
				}
				q.from = n
			}
		case "allowWatchBookmarks":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return q, false
			}
			q.bookmarks = b
		case "timeoutSeconds":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return q, false
			}
			q.timeout = n
		default:
			return q, false
		}
	}
	return q, watch && selector
}

// acceptsJSON reports whether the API server would answer a watch with this Accept header in plain JSON:
// no header, or a first media range that is JSON (or any) without parameters. Protobuf, a Table or a
// partial object, or anything the hub would have to weigh, is left to the API server.
func acceptsJSON(accept string) bool {
	if strings.TrimSpace(accept) == "" {
		return true
	}
	first, _, _ := strings.Cut(accept, ",")
	mt, params, err := mime.ParseMediaType(strings.TrimSpace(first))
	return err == nil && len(params) == 0 && (mt == "application/json" || mt == "*/*" || mt == "application/*")
}
