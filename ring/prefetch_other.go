//go:build !(amd64 || arm64) || purego

package ring

import "unsafe"

// prefetchW is a no-op without assembly: the pushes take the lines when they
// store to them, waiting for each one.
func prefetchW(unsafe.Pointer, uintptr) {}
