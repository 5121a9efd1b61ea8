//go:build linux && (amd64 || arm64) && !purego && go1.26 && !go1.27

//lint:file-ignore U1000 the offset constants are used by pin_amd64.s and pin_arm64.s, through go_asm.h

package vinequeue

import (
	"unsafe"

	"github.com/vineroute/vinequeue/internal/engine"
	"github.com/vineroute/vinequeue/ring"
)

// The build line above is maintained by pin/internal/genoffsets: this file,
// pin_asm_test.go and pin_{amd64,arm64}.s are compiled exactly for the Go
// versions with generated offsets (zpinoffsets_go1_N_linux_GOARCH.go);
// pin_fallback.go covers every other build.

// pinAssembly reports which pinning implementation this build uses.
const pinAssembly = true

// procPin disables preemption of the calling goroutine, exactly as
// runtime.procPin does (the current M's m.locks++), and returns the id of the
// goroutine's P and a token for procUnpin: a pointer to that M's m.locks.
//
// It is one assembly call (pin_GOARCH.s) that walks g → m → p with offsets
// generated for this Go version, so that Enqueue pays for one call instead of
// two: a pin+unpin pair costs 2.3 ns against 3.0 ns for runtime.procPin and
// runtime.procUnpin (BenchmarkPinInterleaved, median windows, amd64 EPYC). While pinned the goroutine can neither be preempted nor moved to
// another M or P, and the P id stays below GOMAXPROCS (procresize needs a
// stop-the-world, which waits for the pin). The caller must not block or park
// before procUnpin, and must not keep tok after it.
func procPin() (pid int, tok *int32)

// procUnpin undoes procPin: m.locks--, which is all runtime.procUnpin does.
// tok points into the M the goroutine is still running on, since a pinned
// goroutine cannot migrate, so the plain decrement races with nothing: only
// that M's thread writes its m.locks (the signal handler, which reads it to
// decide on async preemption, runs on the same thread).
//
// Without -race this inlines into the caller as a single decrement. The race
// detector would flag the write, because it sees our Go stores to m.locks but
// not the runtime's, and two goroutines that ran on one M have no
// happens-before edge between them. go:norace leaves it uninstrumented; the
// compiler refuses to inline go:norace functions in -race builds, so there it
// is an ordinary call, which is fine for a build that is slow anyway.
//
//go:norace
//go:nosplit
func procUnpin(tok *int32) {
	*tok--
}

// Offsets pin_GOARCH.s's pinPush8 uses, through go_asm.h: a P's slot in
// Queue.fast (engine.ProcSlot, the same for every T: the slot holds only
// pointers) and the ring fields a push touches (ring.Offset*). Nothing in Go uses them: the
// file-level lint directive above the package clause says so to staticcheck.
const (
	slotSize      = unsafe.Sizeof(engine.ProcSlot[byte]{})
	slotOffCur    = unsafe.Offsetof(engine.ProcSlot[byte]{}.Cur)
	ringOffTail   = ring.OffsetTail
	ringOffLimit  = ring.OffsetLimit
	ringOffSealed = ring.OffsetSealed
	ringOffMask   = ring.OffsetMask
	ringOffBuf    = ring.OffsetBuf
)

// pinPush8 is Enqueue's fast path for 8-byte pointer-free items, in one
// assembly call: it reads the goroutine's P id (g.m.p.id), takes that P's
// slot in slots[:n] (Queue.fast) and does TryPush's common case on its
// current ring: when the ring is below its limit and not sealed, it stores v
// at buf[tail&mask], publishes tail+1 (a release store) and returns true;
// otherwise (no slot, no ring, at the limit, sealed) it stores nothing and
// returns false, and the caller takes the Go path.
//
// It needs no m.locks++: the runtime never preempts assembly asynchronously
// (isAsyncSafePoint refuses FuncFlagAsm), and a NOSPLIT function with no
// frame and no call has no other point where the goroutine could stop,
// migrate to another P or see a stop-the-world begin. So from reading p.id
// to publishing tail the goroutine is the only one running on that P, and
// so the ring's only producer, exactly as if pinned; and Stop's barrier
// (a stop-the-world) waits for the call to return. The store has no write
// barrier: v must hold no pointers (rawPushable).
//
//go:noescape
func pinPush8(slots unsafe.Pointer, n int, v uint64) bool
