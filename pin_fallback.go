//go:build purego || !(linux && (amd64 || arm64)) || !(go1.26 && !go1.27)

package vinequeue

import (
	"unsafe"

	"github.com/vineroute/vinequeue/pin"
)

// The build line above is maintained by pin/internal/genoffsets: it is the
// complement of pin_asm.go's (no generated offsets for this Go version or
// GOARCH, or -tags purego).

// pinAssembly reports which pinning implementation this build uses.
const pinAssembly = false

// procPin is runtime.procPin (through pin.Pin): preemption disabled, the
// current P id returned. The token is unused (nil) on this path.
func procPin() (pid int, tok *int32) {
	return pin.Pin(), nil
}

// procUnpin is runtime.procUnpin (through pin.Unpin).
func procUnpin(*int32) {
	pin.Unpin()
}

// pinPush8 is never called without the assembly (pinAssembly is false).
func pinPush8(unsafe.Pointer, int, uint64) bool { return false }
