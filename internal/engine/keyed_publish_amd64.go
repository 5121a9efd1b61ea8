//go:build amd64 && !race

package engine

import (
	"sync/atomic"
	"unsafe"
)

// publishSlot is a keyed ring slot's release store of its seq: under x86-TSO
// a plain MOV is a release (stores are not reordered with older stores),
// and the compiler keeps it after the slot's stores. sync/atomic's Store
// would be an XCHG, a full barrier the call does not need: its
// compare-and-swap on the tail already ordered it.
func publishSlot(p *atomic.Uint64, v uint64) {
	*(*uint64)(unsafe.Pointer(p)) = v
}
