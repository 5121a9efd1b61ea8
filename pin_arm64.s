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
