//go:build linux && (amd64 || arm64) && !purego && go1.26 && !go1.27

package vinequeue

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
