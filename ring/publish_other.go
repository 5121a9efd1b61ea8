//go:build !amd64 || race

package ring

import "sync/atomic"

// publish is the producer's release store of tail: sync/atomic's Store (STLR
// on arm64, which is cheap there; instrumented under the race detector).
func publish(p *atomic.Uint64, v uint64) { p.Store(v) }
