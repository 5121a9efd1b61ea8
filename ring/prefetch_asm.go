//go:build (amd64 || arm64) && !purego

package ring

import "unsafe"

// prefetchW hints the CPU to fetch the 64-byte lines of [p, p+n) for writing
// (prefetch_GOARCH.s). It changes no memory and never faults.
//
//go:noescape
func prefetchW(p unsafe.Pointer, n uintptr)
