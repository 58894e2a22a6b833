/*
 * context_x86_64.S - context switch for x86-64, System V ABI.
 *
 * A suspended context is its stack pointer; below it, on its own stack:
 *
 *   sp+0   MXCSR (4 bytes), x87 control word (2 bytes)   [policy below]
 *   sp+8   r15, r14, r13, r12, rbx, rbp
 *   sp+56  return address
 *
 * FPU policy: the SysV ABI makes the control bits of MXCSR and the x87
 * control word callee-saved, and a switch is a call, so each greenlet keeps
 * its own rounding mode and exception masks; a new greenlet starts with
 * those of the greenlet that first switches into it (read when its stack is
 * prepared).  Build with -DGREENLET_NO_FPU_SAVE (make FPU_SAVE=0) to skip
 * this, about 3 ns of a 7.5 ns switch on the AMD EPYC we measured (make
 * bench); then all greenlets of a thread share one floating-point
 * environment.
 */
#if defined(__x86_64__) && !defined(GREENLET_CONTEXT_UCONTEXT)

#if defined(__CET__)
#define ENDBR endbr64
#else
#define ENDBR
#endif

	.text

/* int greenlet__context_jump(void **from_sp, void *to_sp, int status)
 * Returns `status` on the resumed side. */
	.globl	greenlet__context_jump
	.hidden	greenlet__context_jump
	.type	greenlet__context_jump, @function
	.p2align 4
greenlet__context_jump:
	.cfi_startproc
	ENDBR
	pushq	%rbp
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbp, 0
	pushq	%rbx
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbx, 0
	pushq	%r12
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r12, 0
	pushq	%r13
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r13, 0
	pushq	%r14
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r14, 0
	pushq	%r15
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r15, 0
	leaq	-8(%rsp), %rsp
	.cfi_adjust_cfa_offset 8
#ifndef GREENLET_NO_FPU_SAVE
	stmxcsr	(%rsp)
	fnstcw	4(%rsp)
#endif
	/* Both stacks hold the same layout, so the CFI above stays true. */
	movq	%rsp, (%rdi)
	movq	%rsi, %rsp
#ifndef GREENLET_NO_FPU_SAVE
	/* Unconditional: comparing first (to skip the loads when nothing
	 * changed) measured slower, the compare waits on the stmxcsr store. */
	ldmxcsr	(%rsp)
	fldcw	4(%rsp)
#endif
	leaq	8(%rsp), %rsp
	.cfi_adjust_cfa_offset -8
	popq	%r15
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r15
	popq	%r14
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r14
	popq	%r13
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r13
	popq	%r12
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r12
	popq	%rbx
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbx
	popq	%rbp
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbp
	/* pop + indirect jump, not ret: the return address belongs to another
	 * stack's call, so ret would always miss the return stack buffer,
	 * while the branch target buffer learns a ping-pong. */
	movl	%edx, %eax
	popq	%rcx
	.cfi_adjust_cfa_offset -8
	.cfi_register %rip, %rcx
	jmp	*%rcx
	.cfi_endproc
	.size	greenlet__context_jump, .-greenlet__context_jump

/*
 * void *greenlet__context_init(void *top)
 * Builds a frame that greenlet__context_jump "returns" into the trampoline
 * with.  Layout from the 16-byte aligned top T: T-16..T zero (a fake outer
 * frame), T-24 return address = trampoline, then six zeroed registers and
 * the FPU word.  After the jump pops it all, rsp = T-16: 16-byte aligned, as
 * the trampoline's call needs.
 */
	.globl	greenlet__context_init
	.hidden	greenlet__context_init
	.type	greenlet__context_init, @function
	.p2align 4
greenlet__context_init:
	.cfi_startproc
	ENDBR
	movq	%rdi, %rax
	andq	$-16, %rax
	leaq	-80(%rax), %rax
	xorl	%ecx, %ecx
	movq	%rcx, 64(%rax)
	movq	%rcx, 72(%rax)
	leaq	greenlet__context_trampoline(%rip), %rdx
	movq	%rdx, 56(%rax)
	movq	%rcx, 8(%rax)
	movq	%rcx, 16(%rax)
	movq	%rcx, 24(%rax)
	movq	%rcx, 32(%rax)
	movq	%rcx, 40(%rax)
	movq	%rcx, 48(%rax)
	movq	%rcx, (%rax)
	stmxcsr	(%rax)
	fnstcw	4(%rax)
	ret
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
	.cfi_undefined %rip
	ENDBR
	xorl	%ebp, %ebp
	call	greenlet__entry
	ud2
	.cfi_endproc
	.size	greenlet__context_trampoline, .-greenlet__context_trampoline

#endif
	.section .note.GNU-stack,"",@progbits
