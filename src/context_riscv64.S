/*
 * context_riscv64.S - context switch for RV64GC, LP64D ABI (Debian's
 * riscv64).
 *
 * A suspended context is its stack pointer; above it, on its own stack, the
 * registers the psABI makes callee-saved (208 bytes, keeping sp 16-aligned):
 *
 *   sp+0    ra (the return address into the switcher)
 *   sp+8    s0-s11
 *   sp+104  fs0-fs11
 *   sp+200  frm (fcsr's rounding mode; 8 bytes)
 *
 * gp and tp are the module's and the thread's, the same on every greenlet
 * of a thread, so they are left alone.
 *
 * FPU policy, as on x86: each greenlet keeps its own rounding mode (frm).
 * fcsr's accrued exception flags (fflags) stay shared by the thread; RISC-V
 * has no trap enables.  -DGREENLET_NO_FPU_SAVE (make FPU_SAVE=0) skips frm.
 */
#if defined(__riscv) && __riscv_xlen == 64 && \
    defined(__riscv_float_abi_double) && !defined(GREENLET_CONTEXT_UCONTEXT)

	.text

/* int greenlet__context_jump(void **from_sp, void *to_sp, int status)
 * a0, a1, a2.  Returns `status` on the resumed side. */
	.globl	greenlet__context_jump
	.hidden	greenlet__context_jump
	.type	greenlet__context_jump, @function
	.p2align 2
greenlet__context_jump:
	.cfi_startproc
	addi	sp, sp, -208
	.cfi_def_cfa_offset 208
	sd	ra, 0(sp)
	.cfi_offset ra, -208
	sd	s0, 8(sp)
	.cfi_offset s0, -200
	sd	s1, 16(sp)
	.cfi_offset s1, -192
	sd	s2, 24(sp)
	.cfi_offset s2, -184
	sd	s3, 32(sp)
	.cfi_offset s3, -176
	sd	s4, 40(sp)
	.cfi_offset s4, -168
	sd	s5, 48(sp)
	.cfi_offset s5, -160
	sd	s6, 56(sp)
	.cfi_offset s6, -152
	sd	s7, 64(sp)
	.cfi_offset s7, -144
	sd	s8, 72(sp)
	.cfi_offset s8, -136
	sd	s9, 80(sp)
	.cfi_offset s9, -128
	sd	s10, 88(sp)
	.cfi_offset s10, -120
	sd	s11, 96(sp)
	.cfi_offset s11, -112
	fsd	fs0, 104(sp)
	.cfi_offset fs0, -104
	fsd	fs1, 112(sp)
	.cfi_offset fs1, -96
	fsd	fs2, 120(sp)
	.cfi_offset fs2, -88
	fsd	fs3, 128(sp)
	.cfi_offset fs3, -80
	fsd	fs4, 136(sp)
	.cfi_offset fs4, -72
	fsd	fs5, 144(sp)
	.cfi_offset fs5, -64
	fsd	fs6, 152(sp)
	.cfi_offset fs6, -56
	fsd	fs7, 160(sp)
	.cfi_offset fs7, -48
	fsd	fs8, 168(sp)
	.cfi_offset fs8, -40
	fsd	fs9, 176(sp)
	.cfi_offset fs9, -32
	fsd	fs10, 184(sp)
	.cfi_offset fs10, -24
	fsd	fs11, 192(sp)
	.cfi_offset fs11, -16
#ifndef GREENLET_NO_FPU_SAVE
	frrm	t0
	sd	t0, 200(sp)
#endif
	/* Both stacks hold the same layout, so the CFI above stays true. */
	sd	sp, 0(a0)
	mv	sp, a1
#ifndef GREENLET_NO_FPU_SAVE
	ld	t0, 200(sp)
	fsrm	t0
#endif
	ld	ra, 0(sp)
	ld	s0, 8(sp)
	ld	s1, 16(sp)
	ld	s2, 24(sp)
	ld	s3, 32(sp)
	ld	s4, 40(sp)
	ld	s5, 48(sp)
	ld	s6, 56(sp)
	ld	s7, 64(sp)
	ld	s8, 72(sp)
	ld	s9, 80(sp)
	ld	s10, 88(sp)
	ld	s11, 96(sp)
	fld	fs0, 104(sp)
	fld	fs1, 112(sp)
	fld	fs2, 120(sp)
	fld	fs3, 128(sp)
	fld	fs4, 136(sp)
	fld	fs5, 144(sp)
	fld	fs6, 152(sp)
	fld	fs7, 160(sp)
	fld	fs8, 168(sp)
	fld	fs9, 176(sp)
	fld	fs10, 184(sp)
	fld	fs11, 192(sp)
	addi	sp, sp, 208
	.cfi_def_cfa_offset 0
	.cfi_restore ra
	sext.w	a0, a2
	ret
	.cfi_endproc
	.size	greenlet__context_jump, .-greenlet__context_jump

/*
 * void *greenlet__context_init(void *top)
 * Builds a frame that greenlet__context_jump "returns" into the trampoline
 * with.  From the 16-byte aligned top T: T-16..T zero (a fake outer frame),
 * then the 208-byte frame at T-224, zero except ra = trampoline and the
 * current frm.  After the jump, sp = T-16: 16-byte aligned, as the psABI
 * requires.
 */
	.globl	greenlet__context_init
	.hidden	greenlet__context_init
	.type	greenlet__context_init, @function
	.p2align 2
greenlet__context_init:
	.cfi_startproc
	andi	a0, a0, -16
	addi	a0, a0, -224
	sd	zero, 0(a0)
	sd	zero, 8(a0)
	sd	zero, 16(a0)
	sd	zero, 24(a0)
	sd	zero, 32(a0)
	sd	zero, 40(a0)
	sd	zero, 48(a0)
	sd	zero, 56(a0)
	sd	zero, 64(a0)
	sd	zero, 72(a0)
	sd	zero, 80(a0)
	sd	zero, 88(a0)
	sd	zero, 96(a0)
	sd	zero, 104(a0)
	sd	zero, 112(a0)
	sd	zero, 120(a0)
	sd	zero, 128(a0)
	sd	zero, 136(a0)
	sd	zero, 144(a0)
	sd	zero, 152(a0)
	sd	zero, 160(a0)
	sd	zero, 168(a0)
	sd	zero, 176(a0)
	sd	zero, 184(a0)
	sd	zero, 192(a0)
	sd	zero, 200(a0)
	sd	zero, 208(a0)
	sd	zero, 216(a0)
	lla	t0, greenlet__context_trampoline
	sd	t0, 0(a0)
	frrm	t0
	sd	t0, 200(a0)
	ret
	.cfi_endproc
	.size	greenlet__context_init, .-greenlet__context_init

/*
 * First code of every greenlet.  The return address is undefined here, so
 * debuggers and unwinders stop at this frame, and a C++ exception escaping
 * run() finds no handler and terminates instead of unwinding off the stack.
 */
	.type	greenlet__context_trampoline, @function
	.p2align 2
greenlet__context_trampoline:
	.cfi_startproc
	.cfi_undefined ra
	li	s0, 0
	call	greenlet__entry
	unimp
	.cfi_endproc
	.size	greenlet__context_trampoline, .-greenlet__context_trampoline

#endif
	.section .note.GNU-stack,"",@progbits
