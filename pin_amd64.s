//go:build linux && (amd64 || arm64) && !purego && go1.26 && !go1.27

#include "go_asm.h"
#include "textflag.h"

// The build line above is maintained by pin/internal/genoffsets; the
// const_pinOff* offsets come from zpinoffsets_go1_N_linux_amd64.go via go_asm.h.

// func procPin() (pid int, tok *int32)
//
// runtime.procPin in one call: m.locks++, then return m.p.ptr().id and &m.locks.
// ABI0: g is read from TLS (R14 is only guaranteed to hold g in ABIInternal),
// using the same two-instruction form as the runtime's get_tls/g() macros,
// which the linker rewrites correctly for every build mode (PIE, c-shared).
// Assembly functions are never asynchronously preempted, and NOSPLIT with a
// zero frame has no stack-check prologue, so nothing can run between reading
// g.m and incrementing m.locks.
TEXT ·procPin(SB), NOSPLIT, $0-16
	MOVQ TLS, CX
	MOVQ 0(CX)(TLS*1), AX             // AX = g
	MOVQ const_pinOffGM(AX), AX       // AX = g.m
	INCL const_pinOffMLocks(AX)       // m.locks++ (int32; only this thread writes it)
	LEAQ const_pinOffMLocks(AX), CX   // CX = &m.locks
	MOVQ const_pinOffMP(AX), DX       // DX = m.p (non-nil: we are running Go code)
	MOVLQSX const_pinOffPID(DX), DX   // DX = int(p.id)
	MOVQ DX, pid+0(FP)
	MOVQ CX, tok+8(FP)
	RET

// func pinPush8(slots unsafe.Pointer, n int, v uint64) bool
//
// See pin_asm.go. No m.locks++: nothing between the read of p.id and the
// publish of tail can preempt, park or migrate the goroutine (assembly is
// never async-preempted; no call, no stack check).
TEXT ·pinPush8(SB), NOSPLIT, $0-25
	MOVQ TLS, CX
	MOVQ 0(CX)(TLS*1), AX               // AX = g
	MOVQ const_pinOffGM(AX), AX         // AX = g.m
	MOVQ const_pinOffMP(AX), AX         // AX = m.p (non-nil: we are running Go code)
	MOVLQSX const_pinOffPID(AX), AX     // AX = int(p.id)
	CMPQ AX, n+8(FP)
	JAE miss                            // unsigned: no slot for this P id
	IMULQ $const_slotSize, AX
	ADDQ slots+0(FP), AX                // AX = &slots[pid]
	MOVQ const_slotOffCur(AX), DX       // DX = slot.cur
	TESTQ DX, DX
	JZ miss
	MOVQ const_ringOffTail(DX), BX      // BX = tail (only this P writes it)
	CMPQ BX, const_ringOffLimit(DX)
	JEQ miss                            // at the limit: full, watermark or prefetch stop
	MOVL const_ringOffSealed(DX), SI
	TESTL SI, SI
	JNZ miss
	MOVQ const_ringOffMask(DX), SI
	ANDQ BX, SI
	MOVQ const_ringOffBuf(DX), DI
	MOVQ v+16(FP), R8
	MOVQ R8, 0(DI)(SI*8)                // buf[tail&mask] = v
	INCQ BX
	MOVQ BX, const_ringOffTail(DX)      // publish: a plain MOV is a release store (x86-TSO)
	MOVB $1, ret+24(FP)
	RET
miss:
	MOVB $0, ret+24(FP)
	RET
