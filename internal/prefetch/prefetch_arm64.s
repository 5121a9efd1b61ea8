//go:build !purego

#include "textflag.h"

// func ForWrite(p unsafe.Pointer, n uintptr)
//
// PRFM PSTL1KEEP on each 64-byte line of [p, p+n): a hint to fetch the line
// for a store, so that taking it from another core's cache runs in the
// background instead of stalling the store. A prefetch never faults and
// never changes memory.
TEXT ·ForWrite(SB), NOSPLIT, $0-16
	MOVD p+0(FP), R0
	MOVD n+8(FP), R1
	ADD R0, R1, R1 // R1 = end
loop:
	CMP R1, R0
	BHS done
	PRFM (R0), PSTL1KEEP
	ADD $64, R0
	B loop
done:
	RET
