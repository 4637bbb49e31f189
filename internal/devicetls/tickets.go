package devicetls

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"os"
	"strconv"
	"time"
)

const (
	// ticketEpoch is how long one derived key encrypts new session tickets, as Go rotates its own.
	ticketEpoch = 24 * time.Hour
	// ticketEpochsKept is how many past epochs' keys still decrypt tickets: Go refuses a TLS 1.2
	// ticket older than 7 days anyway, so older keys would only widen what a leaked key opens.
	ticketEpochsKept = 7
	// MinTicketSeedBytes is the least a ticket key file may hold.
	MinTicketSeedBytes = 32
)

// readTicketSeed reads the shared secret every replica derives its session ticket keys from.
// Surrounding white space is not part of it, so a hex or base64 text file works as well as raw bytes.
func readTicketSeed(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--tls-ticket-key-file: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < MinTicketSeedBytes {
		return nil, fmt.Errorf("--tls-ticket-key-file %s: %d bytes, want at least %d random bytes (picogate setup --tls writes one)", file, len(b), MinTicketSeedBytes)
	}
	return b, nil
}

// ticketKeys are the session ticket keys of the epoch that holds now: the epoch's own key first
// (it encrypts new tickets), then the next epoch's (a replica whose clock is a little ahead already
// encrypts with it), then the past ones whose tickets may still resume. Every replica with the same
// seed and a clock within a day computes the same keys, so a board resumes on any of them.
func ticketKeys(seed []byte, now time.Time) ([][32]byte, int64, error) {
	epoch := now.Unix() / int64(ticketEpoch/time.Second)
	keys := make([][32]byte, 0, ticketEpochsKept+2)
	for _, e := range append([]int64{epoch, epoch + 1}, pastEpochs(epoch)...) {
		k, err := deriveTicketKey(seed, e)
		if err != nil {
			return nil, 0, err
		}
		keys = append(keys, k)
	}
	return keys, epoch, nil
}

func pastEpochs(epoch int64) []int64 {
	out := make([]int64, 0, ticketEpochsKept)
	for i := int64(1); i <= ticketEpochsKept; i++ {
		out = append(out, epoch-i)
	}
	return out
}

// deriveTicketKey is HKDF-SHA256 of the seed, with the epoch number in the info: one key per day, none
// computable from another without the seed.
func deriveTicketKey(seed []byte, epoch int64) ([32]byte, error) {
	var k [32]byte
	b, err := hkdf.Key(sha256.New, seed, nil, "picogate device port session ticket key "+strconv.FormatInt(epoch, 10), len(k))
	if err != nil {
		return k, fmt.Errorf("deriving a session ticket key: %w", err)
	}
	copy(k[:], b)
	return k, nil
}
