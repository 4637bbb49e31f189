//go:build race

package hmacauth

// raceEnabled: under -race, sync.Pool drops a share of what is put back on purpose, so a pooled path
// allocates and an allocation count means nothing.
const raceEnabled = true
