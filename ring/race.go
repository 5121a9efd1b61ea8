//go:build race

package ring

import "sync"

// raceEnabled sends every push through the slow path, which takes producerSync.
const raceEnabled = true

// producerSync tells the race detector that pushes to one ring are ordered.
// They are, because vinequeue pins the producer to the ring's P for a whole
// push, but two goroutines that took turns on a P have no happens-before edge
// the detector can see, so it would report the producer-private fields
// (limit, headCache) as racing. The mutex is never contended: only the
// goroutine pinned to the ring's P pushes.
type producerSync struct{ mu sync.Mutex }

func (p *producerSync) lock()   { p.mu.Lock() }
func (p *producerSync) unlock() { p.mu.Unlock() }
