/*
 * context_i386.S - context switch for 32-bit x86, System V i386 ABI (Linux).
 *
 * A suspended context is its stack pointer; above it, on its own stack:
 *
 *   sp+0   MXCSR (4 bytes; 0 when built without SSE)
 *   sp+4   x87 control word (2 bytes, 2 bytes padding)
 *   sp+8   edi, esi, ebx, ebp
 *   sp+24  return address
 *
 * FPU policy, as on x86-64: the ABI makes the x87 control word and the
 * control bits of MXCSR callee-saved, and a switch is a call, so each
 * greenlet keeps its own rounding mode and exception masks.  MXCSR is only
 * touched when the build may use SSE (__SSE__): Debian's i386 baseline is
 * the i686, which need not have it (stmxcsr would fault).  -DGREENLET_NO_FPU_SAVE
 * (make FPU_SAVE=0) skips both.
 */
#if defined(__i386__) && !defined(GREENLET_CONTEXT_UCONTEXT)

#if defined(__CET__)
#define ENDBR endbr32
#else
#define ENDBR
#endif

	.text

/* int greenlet__context_jump(void **from_sp, void *to_sp, int status)
 * cdecl: arguments on the stack.  Returns `status` on the resumed side. */
	.globl	greenlet__context_jump
	.hidden	greenlet__context_jump
	.type	greenlet__context_jump, @function
	.p2align 4
greenlet__context_jump:
	.cfi_startproc
	ENDBR
	/* Arguments into caller-saved registers before the pushes move them. */
	movl	4(%esp), %eax
	movl	8(%esp), %ecx
	movl	12(%esp), %edx
	pushl	%ebp
	.cfi_adjust_cfa_offset 4
	.cfi_rel_offset %ebp, 0
	pushl	%ebx
	.cfi_adjust_cfa_offset 4
	.cfi_rel_offset %ebx, 0
	pushl	%esi
	.cfi_adjust_cfa_offset 4
	.cfi_rel_offset %esi, 0
	pushl	%edi
	.cfi_adjust_cfa_offset 4
	.cfi_rel_offset %edi, 0
	leal	-8(%esp), %esp
	.cfi_adjust_cfa_offset 8
#ifndef GREENLET_NO_FPU_SAVE
#ifdef __SSE__
	stmxcsr	(%esp)
#endif
	fnstcw	4(%esp)
#endif
	/* Both stacks hold the same layout, so the CFI above stays true. */
	movl	%esp, (%eax)
	movl	%ecx, %esp
#ifndef GREENLET_NO_FPU_SAVE
#ifdef __SSE__
	ldmxcsr	(%esp)
#endif
	fldcw	4(%esp)
#endif
	leal	8(%esp), %esp
	.cfi_adjust_cfa_offset -8
	popl	%edi
	.cfi_adjust_cfa_offset -4
	.cfi_restore %edi
	popl	%esi
	.cfi_adjust_cfa_offset -4
	.cfi_restore %esi
	popl	%ebx
	.cfi_adjust_cfa_offset -4
	.cfi_restore %ebx
	popl	%ebp
	.cfi_adjust_cfa_offset -4
	.cfi_restore %ebp
	movl	%edx, %eax
	/* pop + indirect jump, not ret: see context_x86_64.S. */
	popl	%ecx
	.cfi_adjust_cfa_offset -4
	.cfi_register %eip, %ecx
	jmp	*%ecx
	.cfi_endproc
	.size	greenlet__context_jump, .-greenlet__context_jump

/*
 * void *greenlet__context_init(void *top)
 * Builds a frame that greenlet__context_jump "returns" into the trampoline
 * with.  From the 16-byte aligned top T: T-16..T zero (a fake outer frame),
 * T-20 return address = trampoline, four zeroed registers and the FPU
 * words at T-44.  After the jump pops it all, esp = T-16: 16-byte aligned
 * before the trampoline's call, as gcc assumes on Linux i386.
 */
	.globl	greenlet__context_init
	.hidden	greenlet__context_init
	.type	greenlet__context_init, @function
	.p2align 4
greenlet__context_init:
	.cfi_startproc
	ENDBR
	movl	4(%esp), %eax
	andl	$-16, %eax
	leal	-44(%eax), %eax
	/* Position-independent address of the trampoline. */
	call	1f
1:	.cfi_adjust_cfa_offset 4
	popl	%ecx
	.cfi_adjust_cfa_offset -4
	leal	(greenlet__context_trampoline - 1b)(%ecx), %ecx
	movl	%ecx, 24(%eax)
	xorl	%ecx, %ecx
	movl	%ecx, 28(%eax)
	movl	%ecx, 32(%eax)
	movl	%ecx, 36(%eax)
	movl	%ecx, 40(%eax)
	movl	%ecx, 8(%eax)
	movl	%ecx, 12(%eax)
	movl	%ecx, 16(%eax)
	movl	%ecx, 20(%eax)
	movl	%ecx, (%eax)
	movl	%ecx, 4(%eax)
#ifdef __SSE__
	stmxcsr	(%eax)
#endif
	fnstcw	4(%eax)
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
	.cfi_undefined %eip
	ENDBR
	xorl	%ebp, %ebp
	call	greenlet__entry
	ud2
	.cfi_endproc
	.size	greenlet__context_trampoline, .-greenlet__context_trampoline

#endif
	.section .note.GNU-stack,"",@progbits
