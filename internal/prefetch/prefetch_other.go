//go:build !(amd64 || arm64) || purego

package prefetch

import "unsafe"

// ForWrite does nothing without assembly: the stores take the lines when
// they come, waiting for each one.
func ForWrite(unsafe.Pointer, uintptr) {}
