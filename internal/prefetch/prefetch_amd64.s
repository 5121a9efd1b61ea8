//go:build !purego

#include "textflag.h"

// func ForWrite(p unsafe.Pointer, n uintptr)
//
// PREFETCHW (0F 0D /1; the Go assembler has no mnemonic for it) on each
// 64-byte line of [p, p+n). It asks for the line in a writable state without
// waiting for it: the invalidation of another core's copy, which a store
// would wait for, runs in the background. A prefetch never faults and never
// changes memory. CPUs without the instruction (before Broadwell on Intel)
// execute it as a NOP.
TEXT ·ForWrite(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), AX
	MOVQ n+8(FP), CX
	ADDQ AX, CX // CX = end
loop:
	CMPQ AX, CX
	JAE done
	BYTE $0x0F; BYTE $0x0D; BYTE $0x08 // PREFETCHW (AX)
	ADDQ $64, AX
	JMP loop
done:
	RET
