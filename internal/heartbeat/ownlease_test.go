package heartbeat

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/picogate/picogate/internal/registry"
)

const ownLeasePath = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/pico-1"

// renewalBody is the device library's renewal of its Lease (device/leasebody.go).
func renewalBody(at time.Time) string {
	return `{"spec":{"holderIdentity":"pico-1","leaseDurationSeconds":40,"renewTime":"` + at.UTC().Format("2006-01-02T15:04:05.000000Z07:00") + `"}}`
}

func coalescingTranslator(t *testing.T, api *fakeAPI, clk *clock) *Translator {
	t.Helper()
	tr, err := New(Config{Upstream: api, GracePeriod: 40 * time.Second, CoalesceLeases: true, Now: clk.now}) // renews every 10s
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// renew sends one Lease write as d and returns the answer, or nil when the translator left it to the
// proxy.
func renew(tr *Translator, d *registry.Device, method, ctype, body string) *httptest.ResponseRecorder {
	path := ownLeasePath
	if method == http.MethodPost {
		path = leasesPath
	}
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.Header.Set("Content-Type", ctype)
	w := httptest.NewRecorder()
	if !tr.ServeStatusPatch(w, r, d, []byte(body)) {
		return nil
	}
	return w
}

func TestParseRenewal(t *testing.T) {
	cases := []struct {
		name, body string
		want       bool
	}{
		{"the device library's renewal", renewalBody(start), true},
		{"renewTime alone", `{"spec":{"renewTime":"2026-12-03T10:00:00.000000Z"}}`, true},
		{"no renewTime", `{"spec":{"holderIdentity":"pico-1","leaseDurationSeconds":40}}`, false},
		{"an empty renewTime", `{"spec":{"renewTime":""}}`, false},
		{"an owner set too", `{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"Node","name":"pico-1","uid":"u"}]},` + renewalBody(start)[1:], false},
		{"another holder", `{"spec":{"holderIdentity":"pico-2","renewTime":"2026-12-03T10:00:00.000000Z"}}`, false},
		{"a field besides a renewal's", `{"spec":{"renewTime":"2026-12-03T10:00:00.000000Z","acquireTime":"2026-12-03T10:00:00.000000Z"}}`, false},
		{"a fractional duration", `{"spec":{"renewTime":"2026-12-03T10:00:00.000000Z","leaseDurationSeconds":4.5}}`, false},
		{"a duration as a string", `{"spec":{"renewTime":"2026-12-03T10:00:00.000000Z","leaseDurationSeconds":"40"}}`, false},
		{"a second document", renewalBody(start) + `{}`, false},
		{"not JSON", `{"spec":`, false},
		{"spec not an object", `{"spec":[]}`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, got := parseRenewal([]byte(c.body), "pico-1"); got != c.want {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestOwnLeaseRenewalsAreCoalesced(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: start}
	api.lease = map[string]any{}
	tr := coalescingTranslator(t, api, clk)
	d := dev("pico-1")
	const merge = "application/merge-patch+json"

	w := renew(tr, d, "PATCH", merge, renewalBody(clk.now()))
	if w == nil || w.Code != 200 || w.Header().Get(HeaderOutcome) != Forwarded {
		t.Fatalf("first renewal: got %v, want 200 forwarded", w)
	}
	wantCalls(t, "first renewal", api.calls(), leasePatch1)
	if got := api.as[0].User; len(got) != 1 || got[0] != "system:node:pico-1" {
		t.Errorf("forwarded as %v, want system:node:pico-1", got)
	}
	forwarded := w.Body.String()

	// Renewals within the renew interval are answered with the Lease as last forwarded.
	for _, after := range []time.Duration{4 * time.Second, 5 * time.Second} {
		clk.add(after)
		w = renew(tr, d, "PATCH", merge, renewalBody(clk.now()))
		if w == nil || w.Code != 200 || w.Header().Get(HeaderOutcome) != Coalesced {
			t.Fatalf("renewal %v later: got %v, want 200 coalesced", after, w)
		}
		var got, upstream struct {
			Metadata struct{ ResourceVersion string } `json:"metadata"`
			Spec     struct {
				RenewTime            string
				LeaseDurationSeconds int
			} `json:"spec"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		_ = json.Unmarshal([]byte(forwarded), &upstream)
		if got != upstream {
			t.Errorf("coalesced answer: got %+v, want the Lease as the API server last answered it, %+v", got, upstream)
		}
	}
	wantCalls(t, "renewals within the interval", api.calls())

	clk.add(time.Second) // 10s since the last forwarded one
	if w = renew(tr, d, "PATCH", merge, renewalBody(clk.now())); w == nil || w.Header().Get(HeaderOutcome) != Forwarded {
		t.Fatalf("renewal a renew interval later: got %v, want forwarded", w)
	}
	wantCalls(t, "renewal a renew interval later", api.calls(), leasePatch1)

	t.Run("a changed duration is forwarded", func(t *testing.T) {
		clk.add(time.Second)
		body := strings.Replace(renewalBody(clk.now()), `"leaseDurationSeconds":40`, `"leaseDurationSeconds":60`, 1)
		if w := renew(tr, d, "PATCH", merge, body); w == nil || w.Header().Get(HeaderOutcome) != Forwarded {
			t.Fatalf("got %v, want forwarded", w)
		}
		wantCalls(t, "a changed duration", api.calls(), leasePatch1)
	})
	t.Run("any other write goes to the proxy and makes the next renewal go upstream", func(t *testing.T) {
		for _, c := range []struct{ method, ctype, body string }{
			{"PATCH", merge, `{"metadata":{"ownerReferences":[]},` + renewalBody(clk.now())[1:]},
			{"PATCH", "application/json-patch+json", `[{"op":"replace","path":"/spec/renewTime","value":"x"}]`},
			{"PUT", "application/json", `{"spec":{}}`},
			{"POST", "application/json", `{"metadata":{"name":"pico-1"}}`},
		} {
			clk.add(time.Second)
			if w := renew(tr, d, c.method, c.ctype, c.body); w != nil {
				t.Fatalf("%s %s: got answered (%d), want left to the proxy", c.method, c.body, w.Code)
			}
			if w := renew(tr, d, "PATCH", merge, renewalBody(clk.now())); w == nil || w.Header().Get(HeaderOutcome) != Forwarded {
				t.Fatalf("renewal after %s %s: got %v, want forwarded", c.method, c.body, w)
			}
			wantCalls(t, "renewal after another write", api.calls(), leasePatch1)
		}
	})
	t.Run("a failed renewal is answered 503 and the next goes upstream", func(t *testing.T) {
		clk.add(10 * time.Second)
		api.fail = errors.New("connection refused")
		if w := renew(tr, d, "PATCH", merge, renewalBody(clk.now())); w == nil || w.Code != 503 || w.Header().Get("Retry-After") == "" {
			t.Fatalf("got %v, want 503 with Retry-After", w)
		}
		api.fail = nil
		clk.add(time.Second)
		if w := renew(tr, d, "PATCH", merge, renewalBody(clk.now())); w == nil || w.Code != 200 || w.Header().Get(HeaderOutcome) != Forwarded {
			t.Fatalf("next renewal: got %v, want 200 forwarded", w)
		}
		wantCalls(t, "a failed renewal and the next", api.calls(), leasePatch1, leasePatch1)
	})
	t.Run("a missing Lease is the API server's 404, and the next renewal goes upstream", func(t *testing.T) {
		clk.add(10 * time.Second)
		api.lease = nil
		if w := renew(tr, d, "PATCH", merge, renewalBody(clk.now())); w == nil || w.Code != 404 {
			t.Fatalf("got %v, want the API server's 404", w)
		}
		api.lease = map[string]any{}
		clk.add(time.Second)
		if w := renew(tr, d, "PATCH", merge, renewalBody(clk.now())); w == nil || w.Header().Get(HeaderOutcome) != Forwarded {
			t.Fatalf("renewal after a 404: got %v, want forwarded", w)
		}
		wantCalls(t, "a 404 and the next renewal", api.calls(), leasePatch1, leasePatch1)
	})
	for outcome, want := range map[string]float64{Forwarded: 9, Coalesced: 2, failed: 2} {
		if got := counterValue(tr.leaseOutcomes.WithLabelValues(outcome)); got != want {
			t.Errorf("picogate_lease_renewals_total{outcome=%q}: got %v, want %v", outcome, got, want)
		}
	}
}

func TestOwnLeaseRenewalsForwardedWithoutCoalescing(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: start}
	api.lease = map[string]any{}
	tr := newTranslator(t, api, clk)
	for range 3 {
		if w := renew(tr, dev("pico-1"), "PATCH", "application/merge-patch+json", renewalBody(clk.now())); w != nil {
			t.Fatalf("got answered (%d), want every renewal left to the proxy", w.Code)
		}
		clk.add(time.Second)
	}
	wantCalls(t, "without CoalesceLeases", api.calls())
}

// A device moving to another replica, or forgotten (revoked, rotated, removed), costs one renewal upstream.
func TestForgottenDeviceRenewsUpstream(t *testing.T) {
	api, clk := newFakeAPI(), &clock{t: start}
	api.lease = map[string]any{}
	tr := coalescingTranslator(t, api, clk)
	d := dev("pico-1")
	renew(tr, d, "PATCH", "application/merge-patch+json", renewalBody(clk.now()))
	tr.Forget("pico-1")
	clk.add(time.Second)
	if w := renew(tr, d, "PATCH", "application/merge-patch+json", renewalBody(clk.now())); w == nil || w.Header().Get(HeaderOutcome) != Forwarded {
		t.Fatalf("got %v, want forwarded", w)
	}
	wantCalls(t, "after Forget", api.calls(), leasePatch1, leasePatch1)
}
