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
