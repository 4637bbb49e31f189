package dashboard

import (
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

func TestTextsInternsBoundedCopies(t *testing.T) {
	long := "a" + strings.Repeat("é", 74) // 149 bytes: byte 96 is inside a character
	for _, tc := range []struct {
		name, in, want string
		interned       bool
	}{
		{"short", "/api/v1/nodes/pico-1", "/api/v1/nodes/pico-1", true},
		{"token redacted", "/x/pgt_SECRETSECRET/y", "/x/pgt_…/y", true},
		{"cut at a character boundary", long, long[:pathBytes-1] + "…", true},
		{"key too long to intern", strings.Repeat("a", 2*pathBytes+1), strings.Repeat("a", pathBytes) + "…", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx := newTexts(pathBytes)
			in := string([]byte(tc.in)) // request memory the table must not keep
			a, b := tx.get(in), tx.get(in)
			if a != tc.want {
				t.Errorf("got %q, want %q", a, tc.want)
			}
			if same := unsafe.StringData(a) == unsafe.StringData(b); same != tc.interned {
				t.Errorf("second lookup shares the first's memory: got %v", same)
			}
			if unsafe.StringData(a) == unsafe.StringData(in) {
				t.Errorf("the stored text points into the caller's string")
			}
		})
	}
}

func TestTextsTableIsBounded(t *testing.T) {
	tx := newTexts(pathBytes)
	for i := range 3 * textShards * textsPerShard {
		tx.get("/random/" + strconv.Itoa(i))
	}
	total := 0
	for i := range tx.shards {
		n := len(tx.shards[i].m)
		if n > textsPerShard {
			t.Errorf("shard %d: got %d texts, want at most %d", i, n, textsPerShard)
		}
		total += n
	}
	if total == 0 {
		t.Errorf("got an empty table, want the latest texts kept")
	}
}
