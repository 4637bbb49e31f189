package heartbeat

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"time"

	"github.com/picogate/picogate/internal/asdevice"
	"github.com/picogate/picogate/internal/registry"
)

// A device that keeps its own Lease the kubelet's way renews it every 10 seconds. The node lifecycle
// controller needs far fewer: it marks a node Unknown only when the Lease stays unchanged for a whole
// grace period (50 s). With CoalesceLeases the gateway forwards a device's renewal only when the last
// one it forwarded for that device is at least RenewInterval old, and answers the others itself — the
// same rate heartbeat translation renews a firmware's Lease at. Everything that is not a plain renewal
// (a create, a patch that sets an owner or anything besides the holder, duration and renew time, a
// changed holder or duration) is forwarded as it is and makes the next renewal go upstream too.

// Outcomes of a device's own Lease renewal (picogate_lease_renewals_total, and the Picogate-Heartbeat
// header of a coalesced answer).
const (
	// Forwarded: the renewal went to the API server, as the device.
	Forwarded = "forwarded"
)

// renewal is a device's plain renewal of its own Lease: a merge patch {"spec":{...}} setting only
// renewTime, and perhaps holderIdentity (its own name) and leaseDurationSeconds.
type renewal struct {
	duration string // leaseDurationSeconds as written, "" if absent
}

// parseRenewal parses a plain renewal of name's Lease; it returns false for any other body.
func parseRenewal(body []byte, name string) (renewal, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc map[string]map[string]any
	if dec.Decode(&doc) != nil || dec.More() || len(doc) != 1 {
		return renewal{}, false
	}
	spec, ok := doc["spec"]
	if !ok {
		return renewal{}, false
	}
	var rn renewal
	renewed := false
	for k, v := range spec {
		switch k {
		case "renewTime":
			s, ok := v.(string)
			if !ok || s == "" {
				return renewal{}, false
			}
			renewed = true
		case "holderIdentity":
			if s, ok := v.(string); !ok || s != name {
				return renewal{}, false
			}
		case "leaseDurationSeconds":
			n, ok := v.(json.Number)
			if !ok {
				return renewal{}, false
			}
			if _, err := n.Int64(); err != nil {
				return renewal{}, false
			}
			rn.duration = n.String()
		default:
			return renewal{}, false
		}
	}
	return rn, renewed
}

// leaseState is what a replica knows of a device's own Lease. Guarded by devState.lock.
type leaseState struct {
	at       time.Time // when this replica last forwarded a renewal the API server accepted; zero: none
	duration string    // the leaseDurationSeconds that renewal set
	rv       string    // the Lease's resourceVersion and renewTime as the API server answered it
	renewed  string
}

// serveOwnLease coalesces a device's plain renewal of its own Lease; see the comment at the top of
// this file. It reports whether it answered.
func (t *Translator) serveOwnLease(w http.ResponseWriter, r *http.Request, d *registry.Device, st *devState, body []byte) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var rn renewal
	ok := err == nil && r.Method == http.MethodPatch && r.URL.RawQuery == "" &&
		(mt == "application/merge-patch+json" || mt == "application/strategic-merge-patch+json")
	if ok {
		rn, ok = parseRenewal(body, d.Name)
	}
	if !ok {
		st.leaseDirty.Store(true) // forwarded as it is: what this replica knows of the Lease may be stale
		return false
	}
	ctx := r.Context()
	select {
	case st.lock <- struct{}{}:
	case <-ctx.Done():
		writeUnavailable(w, "the gateway could not take this Lease renewal in time")
		return true
	}
	defer func() { <-st.lock }()
	now, ls := t.cfg.Now(), &st.lease
	if st.leaseDirty.Swap(false) {
		ls.at = time.Time{}
	}
	if !ls.at.IsZero() && now.Sub(ls.at) < t.cfg.RenewInterval && now.After(ls.at) && (rn.duration == "" || rn.duration == ls.duration) {
		t.leaseCoalesced.Inc()
		writeLease(w, d.Name, ls)
		return true
	}
	res, err := t.cfg.Upstream.Do(ctx, asdevice.Identity{User: d.User, Groups: d.Groups}, asdevice.Request{Method: http.MethodPatch,
		Path: leasePath(d.Name), ContentType: mt, Body: body, UserAgent: r.Header.Get("User-Agent")})
	if !t.accepted(w, d, "renewing the device's own lease", res, err) {
		ls.at = time.Time{}
		t.leaseFailed.Inc()
		return true
	}
	ls.at, ls.rv, ls.renewed, ls.duration = now, "", "", rn.duration
	var got struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Spec struct {
			RenewTime            string       `json:"renewTime"`
			LeaseDurationSeconds *json.Number `json:"leaseDurationSeconds"`
		} `json:"spec"`
	}
	if json.Unmarshal(res.Body, &got) == nil {
		ls.rv, ls.renewed = got.Metadata.ResourceVersion, got.Spec.RenewTime
		if got.Spec.LeaseDurationSeconds != nil {
			ls.duration = got.Spec.LeaseDurationSeconds.String()
		}
	}
	t.leaseForwarded.Inc()
	if t.cfg.OnWritten != nil {
		t.cfg.OnWritten(d, leasePath(d.Name), res.Body)
	}
	w.Header().Set(HeaderOutcome, Forwarded)
	relay(w, res)
	return true
}

// writeLease answers a coalesced renewal: 200 with the Lease as the API server last answered it —
// its resourceVersion and renewTime are those of the last forwarded renewal, which is what the node
// lifecycle controller sees.
func writeLease(w http.ResponseWriter, name string, ls *leaseState) {
	b := make([]byte, 0, 320)
	b = append(b, `{"kind":"Lease","apiVersion":"coordination.k8s.io/v1","metadata":{"name":`...)
	b = appendString(b, name)
	b = append(b, `,"namespace":"`+LeaseNamespace+`"`...)
	if ls.rv != "" {
		b = append(b, `,"resourceVersion":`...)
		b = appendString(b, ls.rv)
	}
	b = append(b, `},"spec":{"holderIdentity":`...)
	b = appendString(b, name)
	if ls.duration != "" {
		b = append(b, `,"leaseDurationSeconds":`...)
		b = append(b, ls.duration...)
	}
	if ls.renewed != "" {
		b = append(b, `,"renewTime":`...)
		b = appendString(b, ls.renewed)
	}
	writeOK(w, append(b, "}}"...), Coalesced)
}
