// Package pin owns VineQueue's pinning layer: how a producer learns which P
// (scheduler processor) it runs on while guaranteeing that it stays there,
// so that a per-P SPSC ring really has a single producer.
//
// # What it owns
//
//   - Pin and Unpin: runtime.procPin and runtime.procUnpin, pulled by a
//     linkname directive (the runtime keeps these open for exactly this use;
//     see the comments above procPin in runtime/proc.go and
//     go.dev/issue/67401). They are the portable path and the reference the
//     fast path is tested against.
//   - The per-Go-version runtime offsets behind the fast path. The root
//     package's hot path is one assembly call, procPin in pin_amd64.s and
//     pin_arm64.s (Go requires assembly to sit beside the package that
//     declares it, so those files, and the generated zpinoffsets_*.go they
//     read through go_asm.h, live in the module root). It walks g → m → p
//     with offsets generated here by `go generate` (internal/genoffsets) from
//     the DWARF of a probe binary (internal/runtimelayout).
//   - The choice between the two paths, made by build constraints that
//     genoffsets maintains: the assembly is compiled for linux/amd64 and
//     linux/arm64 on the Go versions that have generated offsets (today
//     go1.26); every other build — another Go version, GOOS or GOARCH, or
//     -tags purego — uses Pin/Unpin. In the root package the constant
//     pinAssembly says which path a build got.
//
// # Invariants
//
// The root package's procPin does exactly what runtime.procPin does, in one
// call: m.locks++ on the current M, then return int(m.p.ptr().id), plus a
// token, &m.locks, so that procUnpin is the inlinable statement *tok-- (all
// runtime.procUnpin does). A pair costs 2.3 ns against 3.0 ns for
// runtime.procPin+procUnpin (BenchmarkPinInterleaved in the root package, on
// the 2-core amd64 CI box). Tests hold it to that behaviour:
//
//   - its P id equals runtime.procPin's on every P, with many goroutines, as
//     GOMAXPROCS shrinks and grows at run time, and stays below GOMAXPROCS;
//   - its token is the counter runtime.procPin changes, and pins balance
//     (Go code runs with m.locks == 0, so right after procPin it is 1);
//   - a pinned goroutine is not preempted: with one P, a runnable goroutine
//     does not run while the pinned one spins past sysmon's deadline;
//   - the generated offsets equal the DWARF of a binary from the toolchain
//     in use (TestGeneratedOffsetsMatchDWARF), and the DWARF reader rejects a
//     field whose type changed, since the assembly hard-codes load widths.
//
// Why pinning makes a ring indexed by P id single-producer: m.locks > 0
// makes the runtime refuse to preempt the goroutine, synchronously (stack
// check) or asynchronously (signal), and forbids it to park ("schedule:
// holding locks"). So from procPin to procUnpin the goroutine keeps its M
// and its P, and no other goroutine runs on that P. Any other producer that
// computes the same P id must therefore run before procPin or after
// procUnpin: the whole push — load the tail, write the slot, publish the
// tail — is one uninterrupted producer turn. If the push were not pinned, a
// goroutine could be preempted between reading the P id and publishing the
// slot, another goroutine scheduled on that P would push into the same ring,
// and two producers would write one SPSC ring.
//
// The root package's pinPush8 (Enqueue's fast path for 8-byte pointer-free
// items) reads the P id and pushes in the same assembly call, without
// touching m.locks: the runtime never preempts assembly asynchronously
// (isAsyncSafePoint refuses FuncFlagAsm), and a NOSPLIT function without a
// frame or call has no synchronous preemption point, so from the read of
// p.id to the publish of tail it is a pinned producer turn as above, and a
// stop-the-world waits for the call to return. TestPinPush8IsTryPush holds it
// to TryPush's rules; TestPinPush8Concurrent pushes from many goroutines with
// no pin and checks that every item arrives once.
//
// P ids also cannot go stale while pinned: runtime.GOMAXPROCS (procresize)
// needs a stop-the-world, which waits for every pinned goroutine. Between
// pins they can change; ids are dense in [0, GOMAXPROCS), so a caller that
// indexes a table by P id must grow the table when it sees a larger id.
//
// # Concurrency contract
//
//   - Pin/procPin and Unpin/procUnpin are called in pairs on the same
//     goroutine; pins nest. The token from procPin is used once, by the
//     goroutine that got it, before anything that could block, and never
//     after procUnpin (it points into an M that may run other goroutines).
//   - While pinned: no blocking, no parking (channel operations, sync locks,
//     blocking syscalls, time.Sleep: "schedule: holding locks"), no
//     stop-the-world of one's own (runtime.GOMAXPROCS(n), runtime.GC:
//     "stopTheWorld: holding locks"), and keep it short: every other
//     stop-the-world, and so the GC, waits for it. Allocation is allowed;
//     the GC skips assists for a pinned goroutine.
//   - procUnpin's decrement is a plain store: only the M's own thread writes
//     m.locks (the signal handler that reads it runs on that thread). Under
//     -race it is go:norace and not inlined, because the race detector sees
//     our write but not the runtime's and would report goroutines that
//     shared an M as racing.
//
// # Regenerating offsets for a new Go version
//
// With the new toolchain installed (or selected with GOTOOLCHAIN), from the
// module root:
//
//	go generate ./pin/
//
// It builds a probe for linux/amd64 and linux/arm64, writes
// zpinoffsets_go1_N_linux_{amd64,arm64}.go in the root (constrained to
// go1.N && !go1.(N+1)), and rewrites the //go:build lines of pin_asm.go,
// pin_asm_test.go, pin_amd64.s, pin_arm64.s and pin_fallback.go to cover
// every version that has offsets. Keep the files of the versions still
// supported; delete the ones dropped and rerun. Then run the tests on both
// paths and on arm64 (see the Makefile). If a field the assembly reads was
// renamed, retyped or moved to another struct, genoffsets fails: read the
// new runtime.procPin and adapt the assembly and internal/runtimelayout
// before generating. Until then the new version simply uses Pin/Unpin,
// which is correct, only a call slower.
package pin
