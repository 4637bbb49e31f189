package podwatch

import (
	"net/url"
	"strings"
	"testing"
)

func TestParseWatch(t *testing.T) {
	cases := []struct {
		name, query string
		ok          bool
		want        watchQuery
	}{
		{"the device library's watch", "fieldSelector=spec.nodeName%3Dpico-1&watch=1&resourceVersion=42&allowWatchBookmarks=true&timeoutSeconds=300", true,
			watchQuery{rv: "42", from: 42, bookmarks: true, timeout: 300}},
		{"from 0", "watch=true&fieldSelector=spec.nodeName=pico-1&resourceVersion=0", true, watchQuery{rv: "0"}},
		{"no resourceVersion", "watch=1&fieldSelector=spec.nodeName%3Dpico-1", true, watchQuery{}},
		{"another node", "watch=1&fieldSelector=spec.nodeName%3Dpico-2", false, watchQuery{}},
		{"a node whose name starts with ours", "watch=1&fieldSelector=spec.nodeName%3Dpico-10", false, watchQuery{}},
		{"two selectors", "watch=1&fieldSelector=spec.nodeName%3Dpico-1,metadata.name%3Dx", false, watchQuery{}},
		{"a repeated selector", "watch=1&fieldSelector=spec.nodeName%3Dpico-1&fieldSelector=spec.nodeName%3Dpico-2", false, watchQuery{}},
		{"not a watch", "fieldSelector=spec.nodeName%3Dpico-1", false, watchQuery{}},
		{"watch=false", "watch=false&fieldSelector=spec.nodeName%3Dpico-1", false, watchQuery{}},
		{"a label selector", "watch=1&fieldSelector=spec.nodeName%3Dpico-1&labelSelector=a%3Db", false, watchQuery{}},
		{"sendInitialEvents", "watch=1&fieldSelector=spec.nodeName%3Dpico-1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan", false, watchQuery{}},
		{"a resourceVersion that is not a revision", "watch=1&fieldSelector=spec.nodeName%3Dpico-1&resourceVersion=-1", false, watchQuery{}},
		{"a negative timeout", "watch=1&fieldSelector=spec.nodeName%3Dpico-1&timeoutSeconds=-5", false, watchQuery{}},
		{"a bad escape", "watch=1&fieldSelector=spec.nodeName%3Dpico-1%zz", false, watchQuery{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := parseWatch(c.query, "pico-1")
			if ok != c.ok || (ok && got != c.want) {
				t.Errorf("got %+v, %v; want %+v, %v", got, ok, c.want, c.ok)
			}
		})
	}
}

func TestAcceptsJSON(t *testing.T) {
	for accept, want := range map[string]bool{
		"": true, "application/json": true, "*/*": true, "application/json, */*": true,
		"application/vnd.kubernetes.protobuf, application/json":        false,
		"application/json;as=Table;v=v1;g=meta.k8s.io":                 false,
		"application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io": false,
		"text/html": false,
	} {
		if got := acceptsJSON(accept); got != want {
			t.Errorf("Accept %q: got %v, want %v", accept, got, want)
		}
	}
}

// FuzzParseWatch: whatever a device sends, a query is served only if it watches exactly the pods of the
// device's own node, with no parameter the hub does not implement.
func FuzzParseWatch(f *testing.F) {
	for _, s := range []string{"fieldSelector=spec.nodeName%3Dpico-1&watch=1&resourceVersion=42&allowWatchBookmarks=true&timeoutSeconds=300",
		"watch=1&fieldSelector=spec.nodeName%3Dpico-2", "watch=1&fieldSelector=spec.nodeName%3Dpico-1&fieldSelector=x", "%zz", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, ok := parseWatch(raw, "pico-1")
		if !ok {
			return
		}
		vals, err := url.ParseQuery(raw)
		if err != nil {
			t.Fatalf("served a query that does not parse: %q", raw)
		}
		if got := vals["fieldSelector"]; len(got) != 1 || got[0] != "spec.nodeName=pico-1" {
			t.Fatalf("served %q: selector %q", raw, got)
		}
		for k := range vals {
			if !strings.Contains(" watch fieldSelector resourceVersion allowWatchBookmarks timeoutSeconds ", " "+k+" ") {
				t.Fatalf("served %q with parameter %q", raw, k)
			}
		}
		if q.rv != "" && q.rv != "0" && q.from == 0 {
			t.Fatalf("served %q from resourceVersion %q without a revision", raw, q.rv)
		}
	})
}
