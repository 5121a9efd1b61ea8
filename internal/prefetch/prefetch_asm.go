//go:build (amd64 || arm64) && !purego

package prefetch

import "unsafe"

// ForWrite hints the CPU to fetch the 64-byte lines of [p, p+n) for
// writing (prefetch_GOARCH.s), without waiting for them. It changes no
// memory and never faults.
//
//go:noescape
func ForWrite(p unsafe.Pointer, n uintptr)
