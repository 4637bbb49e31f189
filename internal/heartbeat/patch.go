package heartbeat

import (
	"bytes"
	"encoding/json"
	"hash/maphash"
	"time"
)

// patch is a parsed heartbeat: a strategic-merge patch {"status":{"conditions":[...], ...}}.
type patch struct {
	doc   map[string]any
	conds []map[string]any // the conditions, in doc
	ready string           // the Ready condition's status, "" without one
	sum   uint64           // of the patch without the conditions' timestamps
}

// heartbeatStamps are the condition fields a heartbeat changes every time; the gateway sets both.
var heartbeatStamps = [...]string{"lastHeartbeatTime", "lastTransitionTime"}

// parsePatch parses a heartbeat. It returns false for anything else: the caller forwards it untouched.
func parsePatch(body []byte, seed maphash.Seed) (*patch, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // numbers go upstream exactly as the device wrote them
	var doc map[string]any
	if dec.Decode(&doc) != nil || dec.More() || len(doc) != 1 {
		return nil, false
	}
	status, ok := doc["status"].(map[string]any)
	if !ok {
		return nil, false
	}
	list, ok := status["conditions"].([]any)
	if !ok || len(list) == 0 {
		return nil, false
	}
	p := &patch{doc: doc, conds: make([]map[string]any, 0, len(list))}
	for _, v := range list {
		c, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		typ, ok := c["type"].(string)
		if !ok || typ == "" {
			return nil, false
		}
		if s, ok := c["status"].(string); ok && typ == "Ready" {
			p.ready = s
		}
		p.conds = append(p.conds, c)
	}
	// The sum covers everything but the timestamps: take them out, encode (map keys sorted), put back.
	saved := make([][len(heartbeatStamps)]any, len(p.conds))
	for i, c := range p.conds {
		for j, k := range heartbeatStamps {
			saved[i][j] = c[k]
			delete(c, k)
		}
	}
	canon, err := json.Marshal(doc)
	if err != nil {
		return nil, false
	}
	p.sum = maphash.Bytes(seed, canon)
	for i, c := range p.conds {
		for j, k := range heartbeatStamps {
			if saved[i][j] != nil {
				c[k] = saved[i][j]
			}
		}
	}
	return p, true
}

// earliestSane is before any real heartbeat: a board that has not set its clock yet sends 1970 or 2000.
var earliestSane = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// stamped returns the patch to send upstream. lastHeartbeatTime is the gateway's clock. For
// lastTransitionTime: when this replica knows the Node's conditions, a condition whose status is
// unchanged keeps the upstream value (the field is left out, and a strategic merge keeps it), and a
// changed or new one gets the gateway's clock; otherwise the device's value is kept if it is a
// plausible time, else the gateway's clock is used.
func (p *patch) stamped(now time.Time, st *devState) []byte {
	ts := now.UTC().Format(time.RFC3339)
	for _, c := range p.conds {
		c["lastHeartbeatTime"] = ts
		typ, _ := c["type"].(string)
		status, _ := c["status"].(string)
		if st.known {
			if up, ok := st.cond(typ); ok && up.status == status {
				delete(c, "lastTransitionTime")
			} else {
				c["lastTransitionTime"] = ts
			}
			continue
		}
		if s, _ := c["lastTransitionTime"].(string); !plausible(s, now) {
			c["lastTransitionTime"] = ts
		}
	}
	b, err := json.Marshal(p.doc)
	if err != nil { // decoded from JSON a moment ago: always encodes
		panic(err)
	}
	return b
}

func plausible(s string, now time.Time) bool {
	t, err := time.Parse(time.RFC3339, s)
	return err == nil && !t.Before(earliestSane) && !t.After(now.Add(time.Minute))
}

// learn takes the Node the API server answered a status write with: its uid, resourceVersion and
// conditions. It reports whether the answer was a Node it could read.
func (st *devState) learn(body []byte) bool {
	var n struct {
		Metadata struct {
			UID             string `json:"uid"`
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Status struct {
			Conditions []struct {
				Type   string `json:"type"`
				Status string `json:"status"`
			} `json:"conditions"`
		} `json:"status"`
	}
	if json.Unmarshal(body, &n) != nil || n.Metadata.UID == "" {
		st.conds = st.conds[:0]
		return false
	}
	st.uid, st.rv = n.Metadata.UID, n.Metadata.ResourceVersion
	st.conds = st.conds[:0]
	for _, c := range n.Status.Conditions {
		st.conds = append(st.conds, cond{typ: intern(c.Type), status: intern(c.Status)})
	}
	return true
}

// intern returns the common condition types and statuses as constants, so 5,000 devices' states do
// not each hold copies of "MemoryPressure".
func intern(s string) string {
	switch s {
	case "Ready":
		return "Ready"
	case "MemoryPressure":
		return "MemoryPressure"
	case "DiskPressure":
		return "DiskPressure"
	case "PIDPressure":
		return "PIDPressure"
	case "NetworkUnavailable":
		return "NetworkUnavailable"
	case "True":
		return "True"
	case "False":
		return "False"
	case "Unknown":
		return "Unknown"
	}
	return s
}
