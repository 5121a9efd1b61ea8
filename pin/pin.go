package pin

import (
	_ "unsafe" // for go:linkname
)

//go:generate go run ./internal/genoffsets -dir ..

// Pin disables preemption of the calling goroutine and returns the id of the
// P it runs on, in [0, runtime.GOMAXPROCS(0)). It is runtime.procPin itself
// (pulled by go:linkname, which the runtime keeps open for this use; see
// go.dev/issue/67401): it increments the current M's lock count, so the
// goroutine stays on this M and P, and the scheduler, the GC and async
// preemption cannot take them away, until Unpin.
//
// Between Pin and Unpin the caller must not block or call anything that may
// park the goroutine (channel operations, sync locks, blocking syscalls,
// time.Sleep): the scheduler throws "schedule: holding locks". Keep the
// section short, since a stop-the-world waits for it. Allocating is allowed
// (the GC skips assists for a pinned goroutine). Pins nest; each needs its own
// Unpin.
//
//go:linkname Pin runtime.procPin
func Pin() int

// Unpin undoes one Pin (runtime.procUnpin: the M's lock count is decremented).
// It must run on the goroutine that called Pin.
//
//go:linkname Unpin runtime.procUnpin
func Unpin()
