package heartbeat

import (
	"encoding/json"
	"hash/maphash"
	"testing"
	"time"
)

// FuzzParsePatch feeds the heartbeat parser what a device may send: it never panics, and a patch it
// takes always goes upstream as one JSON object that keeps the status and stamps every condition.
func FuzzParsePatch(f *testing.F) {
	f.Add([]byte(heartbeatBody("True", "False", start)))
	f.Add([]byte(`{"status":{"conditions":[{"type":"Ready","status":"True","lastHeartbeatTime":1}]}}`))
	f.Add([]byte(`{"status":{"conditions":[{"type":"Ready"}],"capacity":{"pods":"1e3"}}}`))
	f.Add([]byte(`{"status":{"conditions":[]}}`))
	seed := maphash.MakeSeed()
	f.Fuzz(func(t *testing.T, body []byte) {
		p, ok := parsePatch(body, seed)
		if !ok {
			return
		}
		for _, known := range []bool{false, true} {
			st := &devState{known: known, conds: []cond{{"Ready", "True"}}}
			out := p.stamped(start, st)
			var doc struct {
				Status struct {
					Conditions []map[string]any `json:"conditions"`
				} `json:"status"`
			}
			if err := json.Unmarshal(out, &doc); err != nil {
				t.Fatalf("stamped patch %s is not JSON: %v", out, err)
			}
			for _, c := range doc.Status.Conditions {
				if c["lastHeartbeatTime"] != start.Format(time.RFC3339) {
					t.Fatalf("stamped patch %s: a condition without the gateway's heartbeat time", out)
				}
			}
		}
	})
}

// FuzzParseRenewal feeds the Lease renewal parser what a device may send: it never panics, and a body it
// takes as a plain renewal is one JSON object setting nothing but the renewal's own fields.
func FuzzParseRenewal(f *testing.F) {
	f.Add([]byte(renewalBody(start)))
	f.Add([]byte(`{"spec":{"renewTime":"x","leaseDurationSeconds":1e3}}`))
	f.Add([]byte(`{"metadata":{},"spec":{"renewTime":"x"}}`))
	f.Add([]byte(`{"spec":{"renewTime":"x"}} {}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if _, ok := parseRenewal(body, "pico-1"); !ok {
			return
		}
		var doc map[string]map[string]any
		if err := json.Unmarshal(body, &doc); err != nil || len(doc) != 1 || doc["spec"] == nil {
			t.Fatalf("%s taken as a renewal: %v", body, err)
		}
		for k := range doc["spec"] {
			if k != "renewTime" && k != "holderIdentity" && k != "leaseDurationSeconds" {
				t.Fatalf("%s taken as a renewal with field %q", body, k)
			}
		}
	})
}
