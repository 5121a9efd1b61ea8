package prefetch

import (
	"bytes"
	"testing"
	"unsafe"
)

// TestForWriteChangesNothing: ForWrite is assembly that must only hint.
// Over a buffer of known bytes, for lengths that are not multiples of a line,
// zero, and ranges at both ends of the buffer, no byte may change (a store
// instead of a prefetch, or a wrong bound, would show here or fault).
func TestForWriteChangesNothing(t *testing.T) {
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(i*7 + 3)
	}
	want := append([]byte(nil), buf...)
	for _, c := range []struct{ off, n int }{{0, 0}, {0, 1}, {0, 63}, {0, 64}, {0, 65}, {1, 4095}, {4000, 96}, {0, 4096}, {4095, 1}} {
		ForWrite(unsafe.Pointer(&buf[c.off]), uintptr(c.n))
		if !bytes.Equal(want, buf) {
			t.Fatalf("ForWrite(%d, %d) changed memory", c.off, c.n)
		}
	}
}
