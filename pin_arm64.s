//go:build linux && (amd64 || arm64) && !purego && go1.26 && !go1.27

#include "go_asm.h"
#include "textflag.h"

// The build line above is maintained by pin/internal/genoffsets; the
// const_pinOff* offsets come from zpinoffsets_go1_N_linux_arm64.go via go_asm.h.

// func procPin() (pid int, tok *int32)
//
// runtime.procPin in one call: m.locks++, then return m.p.ptr().id and &m.locks.
// On arm64 g lives in R28 (the assembler's g) in both ABIs. Assembly functions
// are never asynchronously preempted, and NOSPLIT with a zero frame has no
// stack-check prologue, so nothing can run between reading g.m and storing
// m.locks+1. The load/add/store is not atomic, exactly like the runtime's own
// m.locks++: only this thread writes m.locks, and a signal handler that
// interrupts the sequence leaves m.locks as it found it.
TEXT ·procPin(SB), NOSPLIT, $0-16
	MOVD const_pinOffGM(g), R0        // R0 = g.m
	MOVWU const_pinOffMLocks(R0), R1
	ADDW $1, R1
	MOVW R1, const_pinOffMLocks(R0)   // m.locks++ (int32)
	ADD $const_pinOffMLocks, R0, R2   // R2 = &m.locks
	MOVD const_pinOffMP(R0), R3       // R3 = m.p (non-nil: we are running Go code)
	MOVW const_pinOffPID(R3), R3      // R3 = int(p.id), sign-extended
	MOVD R3, pid+0(FP)
	MOVD R2, tok+8(FP)
	RET

// func pinPush8(slots unsafe.Pointer, n int, v uint64) bool
//
// See pin_asm.go. No m.locks++: nothing between the read of p.id and the
// publish of tail can preempt, park or migrate the goroutine (assembly is
// never async-preempted; no call, no stack check). Loads of cur and sealed
// are acquire loads and tail is published with STLR, as the Go code's
// sync/atomic calls are on arm64.
TEXT ·pinPush8(SB), NOSPLIT, $0-25
	MOVD const_pinOffGM(g), R0          // R0 = g.m
	MOVD const_pinOffMP(R0), R0         // R0 = m.p
	MOVW const_pinOffPID(R0), R0        // R0 = int(p.id), sign-extended
	MOVD n+8(FP), R1
	CMP R1, R0
	BHS miss                            // unsigned: no slot for this P id
	MOVD $const_slotSize, R2
	MUL R2, R0, R0
	MOVD slots+0(FP), R1
	ADD R1, R0, R0
	ADD $const_slotOffCur, R0, R0
	LDAR (R0), R3                       // R3 = slot.cur
	CBZ R3, miss
	MOVD const_ringOffTail(R3), R4      // R4 = tail (only this P writes it)
	MOVD const_ringOffLimit(R3), R5
	CMP R5, R4
	BEQ miss                            // at the limit: full, watermark or prefetch stop
	ADD $const_ringOffSealed, R3, R5
	LDARW (R5), R5
	CBNZW R5, miss
	MOVD const_ringOffMask(R3), R5
	AND R4, R5, R5
	MOVD const_ringOffBuf(R3), R6
	MOVD v+16(FP), R7
	MOVD R7, (R6)(R5<<3)                // buf[tail&mask] = v
	ADD $1, R4, R4
	ADD $const_ringOffTail, R3, R8
	STLR R4, (R8)                       // publish tail+1 (release)
	MOVD $1, R0
	MOVB R0, ret+24(FP)
	RET
miss:
	MOVB ZR, ret+24(FP)
	RET
