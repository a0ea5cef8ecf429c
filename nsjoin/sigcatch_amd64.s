#include "textflag.h"

// The signal handler (called by the kernel as a C function, the signal
// number in DI): it writes the number, one byte, to the pipe catchFD and
// returns. Registers need no saving: the kernel restores them all.
TEXT sigCatch<>(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	DI
	MOVQ	$1, AX // SYS_write
	MOVQ	·catchFD(SB), DI
	MOVQ	SP, SI // the low byte of the signal number, little-endian
	MOVQ	$1, DX
	SYSCALL
	POPQ	DI
	RET

// The handler's sa_restorer: back to where the signal came.
TEXT sigRestore<>(SB),NOSPLIT|NOFRAME,$0
	MOVQ	$15, AX // SYS_rt_sigreturn
	SYSCALL
	INT	$3

// func catchAddrs() (handler, restorer uintptr)
TEXT ·catchAddrs(SB),NOSPLIT,$0-16
	LEAQ	sigCatch<>(SB), AX
	MOVQ	AX, handler+0(FP)
	LEAQ	sigRestore<>(SB), AX
	MOVQ	AX, restorer+8(FP)
	RET
