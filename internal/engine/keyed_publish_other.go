//go:build !amd64 || race

package engine

import "sync/atomic"

// publishSlot is a keyed ring slot's release store of its seq (sync/atomic:
// STLR on arm64; instrumented under the race detector).
func publishSlot(p *atomic.Uint64, v uint64) { p.Store(v) }
