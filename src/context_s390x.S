/*
 * context_s390x.S - context switch for IBM Z (s390x), the s390x ELF ABI.
 *
 * A suspended context is its stack pointer r15; the callee-saved state sits
 * at and above it, on its own stack:
 *
 *   sp+0    f8-f15
 *   sp+64   FPC (4 bytes, 4 bytes padding)
 *   sp+72   the switcher's frame: its 160-byte register save area, where,
 *           as any s390x callee does, r6-r14 go at +48 (sp+120..sp+191)
 *
 * r15 is the stack pointer itself; a0/a1 (the thread pointer) belong to the
 * thread, not the greenlet.  The stack stays 8-byte aligned.
 *
 * FPU policy, as on x86: the ABI makes FPC's rounding mode and exception
 * masks callee-saved, and a switch is a call, so each greenlet keeps its
 * own; the whole FPC is restored.  -DGREENLET_NO_FPU_SAVE (make FPU_SAVE=0)
 * skips it.
 */
#if defined(__s390x__) && !defined(GREENLET_CONTEXT_UCONTEXT)

	.text

/* int greenlet__context_jump(void **from_sp, void *to_sp, int status)
 * r2, r3, r4.  Returns `status` on the resumed side. */
	.globl	greenlet__context_jump
	.hidden	greenlet__context_jump
	.type	greenlet__context_jump, @function
	.p2align 4
greenlet__context_jump:
	.cfi_startproc
	/* At entry the CFA is r15 + 160, the caller's save area at r15. */
	stmg	%r6, %r14, 48(%r15)
	.cfi_offset %r6, -112
	.cfi_offset %r7, -104
	.cfi_offset %r8, -96
	.cfi_offset %r9, -88
	.cfi_offset %r10, -80
	.cfi_offset %r11, -72
	.cfi_offset %r12, -64
	.cfi_offset %r13, -56
	.cfi_offset %r14, -48
	aghi	%r15, -72
	.cfi_adjust_cfa_offset 72
	std	%f8, 0(%r15)
	.cfi_offset %f8, -232
	std	%f9, 8(%r15)
	.cfi_offset %f9, -224
	std	%f10, 16(%r15)
	.cfi_offset %f10, -216
	std	%f11, 24(%r15)
	.cfi_offset %f11, -208
	std	%f12, 32(%r15)
	.cfi_offset %f12, -200
	std	%f13, 40(%r15)
	.cfi_offset %f13, -192
	std	%f14, 48(%r15)
	.cfi_offset %f14, -184
	std	%f15, 56(%r15)
	.cfi_offset %f15, -176
#ifndef GREENLET_NO_FPU_SAVE
	stfpc	64(%r15)
#endif
	/* Both stacks hold the same layout, so the CFI above stays true. */
	stg	%r15, 0(%r2)
	lgr	%r15, %r3
#ifndef GREENLET_NO_FPU_SAVE
	lfpc	64(%r15)
#endif
	ld	%f8, 0(%r15)
	ld	%f9, 8(%r15)
	ld	%f10, 16(%r15)
	ld	%f11, 24(%r15)
	ld	%f12, 32(%r15)
	ld	%f13, 40(%r15)
	ld	%f14, 48(%r15)
	ld	%f15, 56(%r15)
	aghi	%r15, 72
	.cfi_adjust_cfa_offset -72
	lmg	%r6, %r14, 48(%r15)
	lgfr	%r2, %r4
	br	%r14
	.cfi_endproc
	.size	greenlet__context_jump, .-greenlet__context_jump

/*
 * void *greenlet__context_init(void *top)
 * Builds a frame that greenlet__context_jump "returns" into the trampoline
 * with.  From the 16-byte aligned top T: T-160..T is the trampoline's own
 * frame (its register save area, which greenlet__entry stores into; back
 * chain 0), with the saved r14 = trampoline at T-48; below it the 72-byte
 * FPR/FPC block at T-232, zero but for the current FPC.  After the jump,
 * r15 = T-160.
 */
	.globl	greenlet__context_init
	.hidden	greenlet__context_init
	.type	greenlet__context_init, @function
	.p2align 4
greenlet__context_init:
	.cfi_startproc
	nill	%r2, 0xfff0
	aghi	%r2, -232
	/* Zero the 232 bytes. */
	xc	0(232, %r2), 0(%r2)
	larl	%r1, greenlet__context_trampoline
	stg	%r1, 72+112(%r2)
	stfpc	64(%r2)
	br	%r14
	.cfi_endproc
	.size	greenlet__context_init, .-greenlet__context_init

/*
 * First code of every greenlet.  The return address is undefined here, so
 * debuggers and unwinders stop at this frame, and a C++ exception escaping
 * run() finds no handler and terminates instead of unwinding off the stack.
 */
	.type	greenlet__context_trampoline, @function
	.p2align 4
greenlet__context_trampoline:
	.cfi_startproc
	.cfi_undefined %r14
	brasl	%r14, greenlet__entry
	.word	0		/* an illegal instruction: entry never returns */
	.cfi_endproc
	.size	greenlet__context_trampoline, .-greenlet__context_trampoline

#endif
	.section .note.GNU-stack,"",@progbits
