/*
 * context_arm.S - context switch for 32-bit ARM, AAPCS with the VFP
 * (hard-float) variant: Debian's armhf (ARMv7-A, VFPv3-D16 at least).
 *
 * A suspended context is its stack pointer; above it, on its own stack
 * (104 bytes, keeping sp 8-aligned as AAPCS requires at a call):
 *
 *   sp+0    d8-d15 (callee-saved VFP registers)
 *   sp+64   FPSCR
 *   sp+68   r4-r11
 *   sp+100  lr (return address into the switcher)
 *
 * FPU policy, as on x86: AAPCS makes FPSCR's control bits (rounding mode,
 * flush-to-zero, default NaN, trap enables) callee-saved, and a switch is a
 * call, so each greenlet keeps its own; the whole register is restored
 * (its sticky exception flags too, as x86's MXCSR).  -DGREENLET_NO_FPU_SAVE
 * (make FPU_SAVE=0) skips it; d8-d15 are always saved.
 *
 * Written in ARM (not Thumb) state: `bl` from Thumb callers becomes `blx`
 * at link time, and `bx lr` returns to either state.
 */
#if defined(__arm__) && defined(__ARM_PCS_VFP) && !defined(GREENLET_CONTEXT_UCONTEXT)

	.syntax	unified
	.arch	armv7-a
	.fpu	vfpv3-d16
	.arm
	.text

/* int greenlet__context_jump(void **from_sp, void *to_sp, int status)
 * r0, r1, r2.  Returns `status` on the resumed side. */
	.globl	greenlet__context_jump
	.hidden	greenlet__context_jump
	.type	greenlet__context_jump, %function
	.p2align 4
greenlet__context_jump:
	.fnstart
	.cfi_startproc
#ifndef GREENLET_NO_FPU_SAVE
	vmrs	r3, fpscr
#endif
	/* r3 only reserves the FPSCR slot: AAPCS lets a callee clobber it. */
	.save	{r3-r11, lr}
	push	{r3-r11, lr}
	.cfi_def_cfa_offset 40
	.cfi_offset r4, -36
	.cfi_offset r5, -32
	.cfi_offset r6, -28
	.cfi_offset r7, -24
	.cfi_offset r8, -20
	.cfi_offset r9, -16
	.cfi_offset r10, -12
	.cfi_offset r11, -8
	.cfi_offset lr, -4
	.vsave	{d8-d15}
	vpush	{d8-d15}
	.cfi_def_cfa_offset 104
	.cfi_offset d8, -104
	.cfi_offset d9, -96
	.cfi_offset d10, -88
	.cfi_offset d11, -80
	.cfi_offset d12, -72
	.cfi_offset d13, -64
	.cfi_offset d14, -56
	.cfi_offset d15, -48

	/* Both stacks hold the same layout, so the CFI above stays true. */
	str	sp, [r0]
	mov	sp, r1

	vpop	{d8-d15}
	.cfi_def_cfa_offset 40
	pop	{r3-r11, lr}
	.cfi_def_cfa_offset 0
#ifndef GREENLET_NO_FPU_SAVE
	vmsr	fpscr, r3
#endif
	mov	r0, r2
	bx	lr
	.cfi_endproc
	.fnend
	.size	greenlet__context_jump, .-greenlet__context_jump

/*
 * void *greenlet__context_init(void *top)
 * Builds a frame that greenlet__context_jump "returns" into the trampoline
 * with.  From the 8-byte aligned top T: T-8..T zero (a fake outer frame),
 * then the 104-byte frame at T-112, all zero except FPSCR (the current
 * one) and the saved lr = trampoline.  After the jump pops it, sp = T-8:
 * 8-byte aligned, as AAPCS requires at the trampoline's call.
 */
	.globl	greenlet__context_init
	.hidden	greenlet__context_init
	.type	greenlet__context_init, %function
	.p2align 4
greenlet__context_init:
	.fnstart
	.cfi_startproc
	bic	r0, r0, #7
	sub	r0, r0, #112
	mov	r2, #0
	mov	r3, #0
	mov	r1, r0
	/* Zero the 112 bytes, 8 at a time. */
	add	r12, r0, #112
1:	strd	r2, r3, [r1], #8
	cmp	r1, r12
	bne	1b
#ifndef GREENLET_NO_FPU_SAVE
	vmrs	r1, fpscr
	str	r1, [r0, #64]
#endif
	adr	r1, greenlet__context_trampoline
	str	r1, [r0, #100]
	bx	lr
	.cfi_endproc
	.fnend
	.size	greenlet__context_init, .-greenlet__context_init

/*
 * First code of every greenlet.  The return address is undefined here and
 * the EHABI entry says "cannot unwind", so debuggers and unwinders stop at
 * this frame, and a C++ exception escaping run() finds no handler and
 * terminates instead of unwinding off the stack.
 */
	.type	greenlet__context_trampoline, %function
	.p2align 4
greenlet__context_trampoline:
	.fnstart
	.cantunwind
	.cfi_startproc
	.cfi_undefined lr
	mov	r11, #0
	mov	lr, #0
	bl	greenlet__entry
	udf	#0
	.cfi_endproc
	.fnend
	.size	greenlet__context_trampoline, .-greenlet__context_trampoline

#endif
	.section .note.GNU-stack,"",%progbits
