#include "textflag.h"

// func rawVfork(args, size uintptr) (pid, errno uintptr)
//
// clone3 for a child that shares this thread's memory and stack
// (CLONE_VM|CLONE_VFORK), which is suspended until the child calls execve
// or exits. The child, running first on the shared stack, would overwrite
// the return address there: it is kept in R12 across the system call and
// pushed back after it, in the child and again in the parent.
TEXT ·rawVfork(SB),NOSPLIT|NOFRAME,$0-32
	MOVQ	args+0(FP), DI
	MOVQ	size+8(FP), SI
	MOVQ	$435, AX // SYS_clone3
	POPQ	R12
	SYSCALL
	PUSHQ	R12
	CMPQ	AX, $0xfffffffffffff001
	JLS	ok
	MOVQ	$-1, pid+16(FP)
	NEGQ	AX
	MOVQ	AX, errno+24(FP)
	RET
ok:
	MOVQ	AX, pid+16(FP)
	MOVQ	$0, errno+24(FP)
	RET
