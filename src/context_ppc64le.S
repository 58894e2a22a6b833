/*
 * context_ppc64le.S - context switch for 64-bit little-endian POWER, ELFv2
 * ABI (Debian's ppc64el; POWER8 and later, so VMX is always there).
 *
 * A suspended context is its stack pointer r1, the back chain of a
 * 528-byte frame (16-byte aligned, as ELFv2 requires) holding the state the
 * ABI makes callee-saved:
 *
 *   sp+0    back chain (the switcher's sp)
 *   sp+8    CR (cr2-cr4 are restored; the other fields are volatile)
 *   sp+16   LR (the return address into the switcher)
 *   sp+24   r2 (TOC pointer)
 *   sp+32   VRSAVE (4 bytes)
 *   sp+40   FPSCR (8 bytes, as mffs leaves it)
 *   sp+48   r14-r31
 *   sp+192  f14-f31
 *   sp+336  v20-v31 (16 bytes each)
 *
 * FPU policy, as on x86: ELFv2 makes FPSCR's rounding mode and enable bits
 * "limited-access" (a callee that changes them restores them), and a switch
 * is a call, so each greenlet keeps its own; the whole FPSCR is restored.
 * -DGREENLET_NO_FPU_SAVE (make FPU_SAVE=0) skips it.  Only the FPR half of
 * vs14-vs31 is callee-saved, and the rest of the VSX state is volatile.
 */
#if defined(__powerpc64__) && defined(_CALL_ELF) && _CALL_ELF == 2 && \
    !defined(GREENLET_CONTEXT_UCONTEXT)

	.abiversion 2
	.text

/* int greenlet__context_jump(void **from_sp, void *to_sp, int status)
 * r3, r4, r5.  Returns `status` on the resumed side.  Uses no TOC, so one
 * entry point. */
	.globl	greenlet__context_jump
	.hidden	greenlet__context_jump
	.type	greenlet__context_jump, @function
	.p2align 4
greenlet__context_jump:
	.cfi_startproc
	mflr	%r0
	mfcr	%r12
	stdu	%r1, -528(%r1)
	.cfi_def_cfa_offset 528
	std	%r0, 16(%r1)
	.cfi_offset lr, -512
	stw	%r12, 8(%r1)
	std	%r2, 24(%r1)
	mfvrsave %r7
	stw	%r7, 32(%r1)
#ifndef GREENLET_NO_FPU_SAVE
	mffs	%f0
	stfd	%f0, 40(%r1)
#endif
	std	%r14, 48(%r1)
	.cfi_offset r14, -480
	std	%r15, 56(%r1)
	.cfi_offset r15, -472
	std	%r16, 64(%r1)
	.cfi_offset r16, -464
	std	%r17, 72(%r1)
	.cfi_offset r17, -456
	std	%r18, 80(%r1)
	.cfi_offset r18, -448
	std	%r19, 88(%r1)
	.cfi_offset r19, -440
	std	%r20, 96(%r1)
	.cfi_offset r20, -432
	std	%r21, 104(%r1)
	.cfi_offset r21, -424
	std	%r22, 112(%r1)
	.cfi_offset r22, -416
	std	%r23, 120(%r1)
	.cfi_offset r23, -408
	std	%r24, 128(%r1)
	.cfi_offset r24, -400
	std	%r25, 136(%r1)
	.cfi_offset r25, -392
	std	%r26, 144(%r1)
	.cfi_offset r26, -384
	std	%r27, 152(%r1)
	.cfi_offset r27, -376
	std	%r28, 160(%r1)
	.cfi_offset r28, -368
	std	%r29, 168(%r1)
	.cfi_offset r29, -360
	std	%r30, 176(%r1)
	.cfi_offset r30, -352
	std	%r31, 184(%r1)
	.cfi_offset r31, -344
	stfd	%f14, 192(%r1)
	.cfi_offset 46, -336
	stfd	%f15, 200(%r1)
	.cfi_offset 47, -328
	stfd	%f16, 208(%r1)
	.cfi_offset 48, -320
	stfd	%f17, 216(%r1)
	.cfi_offset 49, -312
	stfd	%f18, 224(%r1)
	.cfi_offset 50, -304
	stfd	%f19, 232(%r1)
	.cfi_offset 51, -296
	stfd	%f20, 240(%r1)
	.cfi_offset 52, -288
	stfd	%f21, 248(%r1)
	.cfi_offset 53, -280
	stfd	%f22, 256(%r1)
	.cfi_offset 54, -272
	stfd	%f23, 264(%r1)
	.cfi_offset 55, -264
	stfd	%f24, 272(%r1)
	.cfi_offset 56, -256
	stfd	%f25, 280(%r1)
	.cfi_offset 57, -248
	stfd	%f26, 288(%r1)
	.cfi_offset 58, -240
	stfd	%f27, 296(%r1)
	.cfi_offset 59, -232
	stfd	%f28, 304(%r1)
	.cfi_offset 60, -224
	stfd	%f29, 312(%r1)
	.cfi_offset 61, -216
	stfd	%f30, 320(%r1)
	.cfi_offset 62, -208
	stfd	%f31, 328(%r1)
	.cfi_offset 63, -200
	li	%r6, 336
	stvx	%v20, %r6, %r1
	.cfi_offset 97, -192
	li	%r6, 352
	stvx	%v21, %r6, %r1
	.cfi_offset 98, -176
	li	%r6, 368
	stvx	%v22, %r6, %r1
	.cfi_offset 99, -160
	li	%r6, 384
	stvx	%v23, %r6, %r1
	.cfi_offset 100, -144
	li	%r6, 400
	stvx	%v24, %r6, %r1
	.cfi_offset 101, -128
	li	%r6, 416
	stvx	%v25, %r6, %r1
	.cfi_offset 102, -112
	li	%r6, 432
	stvx	%v26, %r6, %r1
	.cfi_offset 103, -96
	li	%r6, 448
	stvx	%v27, %r6, %r1
	.cfi_offset 104, -80
	li	%r6, 464
	stvx	%v28, %r6, %r1
	.cfi_offset 105, -64
	li	%r6, 480
	stvx	%v29, %r6, %r1
	.cfi_offset 106, -48
	li	%r6, 496
	stvx	%v30, %r6, %r1
	.cfi_offset 107, -32
	li	%r6, 512
	stvx	%v31, %r6, %r1
	.cfi_offset 108, -16

	/* Both stacks hold the same layout, so the CFI above stays true. */
	std	%r1, 0(%r3)
	mr	%r1, %r4

	ld	%r14, 48(%r1)
	ld	%r15, 56(%r1)
	ld	%r16, 64(%r1)
	ld	%r17, 72(%r1)
	ld	%r18, 80(%r1)
	ld	%r19, 88(%r1)
	ld	%r20, 96(%r1)
	ld	%r21, 104(%r1)
	ld	%r22, 112(%r1)
	ld	%r23, 120(%r1)
	ld	%r24, 128(%r1)
	ld	%r25, 136(%r1)
	ld	%r26, 144(%r1)
	ld	%r27, 152(%r1)
	ld	%r28, 160(%r1)
	ld	%r29, 168(%r1)
	ld	%r30, 176(%r1)
	ld	%r31, 184(%r1)
	lfd	%f14, 192(%r1)
	lfd	%f15, 200(%r1)
	lfd	%f16, 208(%r1)
	lfd	%f17, 216(%r1)
	lfd	%f18, 224(%r1)
	lfd	%f19, 232(%r1)
	lfd	%f20, 240(%r1)
	lfd	%f21, 248(%r1)
	lfd	%f22, 256(%r1)
	lfd	%f23, 264(%r1)
	lfd	%f24, 272(%r1)
	lfd	%f25, 280(%r1)
	lfd	%f26, 288(%r1)
	lfd	%f27, 296(%r1)
	lfd	%f28, 304(%r1)
	lfd	%f29, 312(%r1)
	lfd	%f30, 320(%r1)
	lfd	%f31, 328(%r1)
	li	%r6, 336
	lvx	%v20, %r6, %r1
	li	%r6, 352
	lvx	%v21, %r6, %r1
	li	%r6, 368
	lvx	%v22, %r6, %r1
	li	%r6, 384
	lvx	%v23, %r6, %r1
	li	%r6, 400
	lvx	%v24, %r6, %r1
	li	%r6, 416
	lvx	%v25, %r6, %r1
	li	%r6, 432
	lvx	%v26, %r6, %r1
	li	%r6, 448
	lvx	%v27, %r6, %r1
	li	%r6, 464
	lvx	%v28, %r6, %r1
	li	%r6, 480
	lvx	%v29, %r6, %r1
	li	%r6, 496
	lvx	%v30, %r6, %r1
	li	%r6, 512
	lvx	%v31, %r6, %r1
#ifndef GREENLET_NO_FPU_SAVE
	lfd	%f0, 40(%r1)
	mtfsf	0xff, %f0
#endif
	lwz	%r7, 32(%r1)
	mtvrsave %r7
	ld	%r2, 24(%r1)
	lwz	%r12, 8(%r1)
	mtcrf	0x38, %r12	/* cr2, cr3, cr4 */
	ld	%r0, 16(%r1)
	mtlr	%r0
	addi	%r1, %r1, 528
	.cfi_def_cfa_offset 0
	.cfi_restore lr
	mr	%r3, %r5
	blr
	.cfi_endproc
	.size	greenlet__context_jump, .-greenlet__context_jump

/*
 * void *greenlet__context_init(void *top)
 * Builds a frame that greenlet__context_jump "returns" into the trampoline
 * with.  From the 16-byte aligned top T: T-32..T is zero, the trampoline's
 * own minimal ELFv2 frame (back chain 0 ends the chain; greenlet__entry
 * saves its LR there), and the 528-byte frame at T-560 is zero except
 * LR = trampoline, r2 = this module's TOC (the trampoline's call uses
 * greenlet__entry's local entry, which expects it) and the current FPSCR.
 * After the jump, r1 = T-32: 16-byte aligned.
 */
	.globl	greenlet__context_init
	.hidden	greenlet__context_init
	.type	greenlet__context_init, @function
	.p2align 4
greenlet__context_init:
	.cfi_startproc
	clrrdi	%r3, %r3, 4
	addi	%r3, %r3, -560
	li	%r0, 0
	std	%r0, 0(%r3)
	std	%r0, 8(%r3)
	std	%r0, 16(%r3)
	std	%r0, 24(%r3)
	std	%r0, 32(%r3)
	std	%r0, 40(%r3)
	std	%r0, 48(%r3)
	std	%r0, 56(%r3)
	std	%r0, 64(%r3)
	std	%r0, 72(%r3)
	std	%r0, 80(%r3)
	std	%r0, 88(%r3)
	std	%r0, 96(%r3)
	std	%r0, 104(%r3)
	std	%r0, 112(%r3)
	std	%r0, 120(%r3)
	std	%r0, 128(%r3)
	std	%r0, 136(%r3)
	std	%r0, 144(%r3)
	std	%r0, 152(%r3)
	std	%r0, 160(%r3)
	std	%r0, 168(%r3)
	std	%r0, 176(%r3)
	std	%r0, 184(%r3)
	std	%r0, 192(%r3)
	std	%r0, 200(%r3)
	std	%r0, 208(%r3)
	std	%r0, 216(%r3)
	std	%r0, 224(%r3)
	std	%r0, 232(%r3)
	std	%r0, 240(%r3)
	std	%r0, 248(%r3)
	std	%r0, 256(%r3)
	std	%r0, 264(%r3)
	std	%r0, 272(%r3)
	std	%r0, 280(%r3)
	std	%r0, 288(%r3)
	std	%r0, 296(%r3)
	std	%r0, 304(%r3)
	std	%r0, 312(%r3)
	std	%r0, 320(%r3)
	std	%r0, 328(%r3)
	std	%r0, 336(%r3)
	std	%r0, 344(%r3)
	std	%r0, 352(%r3)
	std	%r0, 360(%r3)
	std	%r0, 368(%r3)
	std	%r0, 376(%r3)
	std	%r0, 384(%r3)
	std	%r0, 392(%r3)
	std	%r0, 400(%r3)
	std	%r0, 408(%r3)
	std	%r0, 416(%r3)
	std	%r0, 424(%r3)
	std	%r0, 432(%r3)
	std	%r0, 440(%r3)
	std	%r0, 448(%r3)
	std	%r0, 456(%r3)
	std	%r0, 464(%r3)
	std	%r0, 472(%r3)
	std	%r0, 480(%r3)
	std	%r0, 488(%r3)
	std	%r0, 496(%r3)
	std	%r0, 504(%r3)
	std	%r0, 512(%r3)
	std	%r0, 520(%r3)
	std	%r0, 528(%r3)
	std	%r0, 536(%r3)
	std	%r0, 544(%r3)
	std	%r0, 552(%r3)
	/* The trampoline's address, position-independently. */
	mflr	%r0
	bcl	20, 31, 1f
1:	mflr	%r4
	mtlr	%r0
	addi	%r4, %r4, greenlet__context_trampoline - 1b
	std	%r4, 16(%r3)
	std	%r2, 24(%r3)
	mffs	%f0
	stfd	%f0, 40(%r3)
	blr
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
	.cfi_undefined lr
	bl	greenlet__entry
	nop
	trap
	.cfi_endproc
	.size	greenlet__context_trampoline, .-greenlet__context_trampoline

#endif
	.section .note.GNU-stack,"",@progbits
