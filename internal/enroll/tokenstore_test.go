package enroll

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestConsumeNeverOverspends: 24 enrollments on two "replicas" (two stores) race for a 5-use token;
// exactly 5 get a use, and the token says so.
func TestConsumeNeverOverspends(t *testing.T) {
	cs := client(t)
	replicas := []*Tokens{NewTokens(cs, ""), NewTokens(cs, "")}
	tok, info, err := replicas[0].Create(context.Background(), TokenSpec{TTL: time.Hour, Uses: 5, Prefix: "pico-"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[string]int{}
	start := make(chan struct{})
	for i := range 24 {
		wg.Go(func() {
			<-start
			_, err := replicas[i%2].Consume(context.Background(), tok.Reveal(), func(*TokenInfo) error { return nil })
			key := "ok"
			switch {
			case errors.Is(err, ErrTokenExhausted):
				key = "exhausted"
			case err != nil:
				key = err.Error()
			}
			mu.Lock()
			results[key]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	if results["ok"] != 5 || results["exhausted"] != 19 {
		t.Errorf("got %v, want 5 ok and 19 exhausted", results)
	}
	list, err := replicas[1].List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range list {
		if l.ID == info.ID && (l.Used != 5 || l.State(time.Now()) != "used up") {
			t.Errorf("token after the race: got used %d, state %s; want 5, used up", l.Used, l.State(time.Now()))
		}
	}
}

// TestConsumeChecks: a refused check spends nothing; a wrong secret is unknown.
func TestConsumeChecks(t *testing.T) {
	cs := client(t)
	ts := NewTokens(cs, "")
	tok, _, err := ts.Create(context.Background(), TokenSpec{TTL: time.Hour, Uses: 1, Prefix: "pico-"})
	if err != nil {
		t.Fatal(err)
	}
	refuse := errors.New("name taken")
	if _, err := ts.Consume(context.Background(), tok.Reveal(), func(*TokenInfo) error { return refuse }); !errors.Is(err, refuse) {
		t.Fatalf("refusing check: got %v, want its error", err)
	}
	wrong := tok.Reveal()[:len(tok.Reveal())-1] + "x"
	if wrong == tok.Reveal() {
		wrong = tok.Reveal()[:len(tok.Reveal())-1] + "y"
	}
	if _, err := ts.Consume(context.Background(), wrong, func(*TokenInfo) error { return nil }); !errors.Is(err, ErrUnknownToken) {
		t.Fatalf("wrong secret: got %v, want ErrUnknownToken", err)
	}
	info, err := ts.Consume(context.Background(), tok.Reveal(), func(i *TokenInfo) error { return nil })
	if err != nil || info.Used != 1 || info.Prefix != "pico-" {
		t.Fatalf("the one use: got %+v, %v; want used 1 (the refused check spent nothing)", info, err)
	}
	if _, err := ts.Consume(context.Background(), tok.Reveal(), func(*TokenInfo) error { return nil }); !errors.Is(err, ErrTokenExhausted) {
		t.Fatalf("after the one use: got %v, want ErrTokenExhausted", err)
	}
}

// TestSweep: two sweepers at once delete each expired token once, and nothing else.
func TestSweep(t *testing.T) {
	cs := client(t)
	past := NewTokens(cs, "")
	past.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) } // creates tokens already expired
	var expired []string
	for range 3 {
		_, info, err := past.Create(context.Background(), TokenSpec{TTL: time.Hour, Prefix: "pico-"})
		if err != nil {
			t.Fatal(err)
		}
		expired = append(expired, info.ID)
	}
	_, live, err := NewTokens(cs, "").Create(context.Background(), TokenSpec{TTL: time.Hour, Prefix: "pico-"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	counts := make([]int, 2)
	for i := range 2 {
		wg.Go(func() {
			n, err := NewTokens(cs, "").Sweep(context.Background())
			if err != nil {
				t.Errorf("sweep %d: %v", i, err)
			}
			counts[i] = n
		})
	}
	wg.Wait()
	if counts[0]+counts[1] < 3 {
		t.Errorf("sweeps deleted %v, want the 3 expired tokens deleted", counts)
	}
	list, err := NewTokens(cs, "").List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	left := map[string]bool{}
	for _, l := range list {
		left[l.ID] = true
	}
	for _, id := range expired {
		if left[id] {
			t.Errorf("expired token %s survived the sweep", id)
		}
	}
	if !left[live.ID] {
		t.Error("the live token was swept")
	}
}
