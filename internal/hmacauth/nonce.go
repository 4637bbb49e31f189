package hmacauth

import (
	"encoding/hex"
	"errors"
	"sync"
)

// DefaultNonceCacheSize bounds one device's remembered nonces. At the gateway's default rate limit (5/s,
// burst 20) a device can have about 320 requests accepted in a 60 s span (a timestamp is accepted from
// 30 s before to 30 s after it), so 1024 leaves room for a faster limit; at about 40 bytes an entry, a
// full cache is about 40 KiB.
const DefaultNonceCacheSize = 1024

// Replay and cache errors, kept distinct so the gateway can count and explain them.
var (
	ErrReplay    = errors.New("nonce already used")
	ErrCacheFull = errors.New("too many signed requests within the replay window")
)

// NonceCache remembers the nonces of one device's accepted requests until their timestamps leave the
// window, so each signed request is accepted at most once by this process. It never forgets a nonce that
// could still be accepted: when it is full of live nonces it refuses new ones (ErrCacheFull) rather than
// open a replay. Only a holder of the device's key can fill it, so that costs only the device itself.
type NonceCache struct {
	mu        sync.Mutex
	m         map[[NonceHexLen / 2]byte]int64 // nonce → last Unix second its timestamp is in the window
	max       int
	nextSweep int64
}

// NewNonceCache returns a cache of at most max nonces (DefaultNonceCacheSize if max <= 0).
func NewNonceCache(max int) *NonceCache {
	if max <= 0 {
		max = DefaultNonceCacheSize
	}
	return &NonceCache{m: make(map[[NonceHexLen / 2]byte]int64), max: max}
}

// Add records nonce (32 lowercase hex digits, as ParseAuthorization checked) as used until expires; now
// is the current Unix second. It returns ErrReplay if the nonce is still remembered.
func (c *NonceCache) Add(nonce string, expires, now int64) error {
	var k [NonceHexLen / 2]byte
	if len(nonce) != NonceHexLen {
		return ErrReplay // never valid; ParseAuthorization already refuses it
	}
	if _, err := hex.Decode(k[:], []byte(nonce)); err != nil {
		return ErrReplay
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if exp, ok := c.m[k]; ok && exp >= now {
		return ErrReplay
	}
	if now >= c.nextSweep || len(c.m) >= c.max {
		c.sweep(now)
	}
	if len(c.m) >= c.max {
		return ErrCacheFull
	}
	c.m[k] = expires
	return nil
}

// sweep forgets nonces whose timestamps have left the window; callers hold mu.
func (c *NonceCache) sweep(now int64) {
	for k, exp := range c.m {
		if exp < now {
			delete(c.m, k)
		}
	}
	c.nextSweep = now + 30
}

// Len is the number of remembered nonces.
func (c *NonceCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
