/*
 * context_aarch64.S - context switch for AArch64, AAPCS64 (Linux).
 *
 * A suspended context is its stack pointer; above it, on its own stack, the
 * registers AAPCS64 makes callee-saved (160 bytes, keeping sp 16-aligned):
 *
 *   sp+0    x29 (frame pointer), x30 (return address into the switcher)
 *   sp+16   x19, x20
 *   sp+32   x21, x22
 *   sp+48   x23, x24
 *   sp+64   x25, x26
 *   sp+80   x27, x28
 *   sp+96   d8, d9
 *   sp+112  d10, d11
 *   sp+128  d12, d13
 *   sp+144  d14, d15
 *
 * Only the low 64 bits of v8-v15 are callee-saved; the rest of the vector
 * and SVE state is caller-saved, so a switch (a call) need not keep it.
 * x18 (platform register) is left alone.
 *
 * FPU policy: FPCR (rounding mode, flush-to-zero, trap enables) is NOT saved
 * or restored.  All greenlets of a thread share one FPCR: a greenlet that
 * changes the rounding mode changes it for every greenlet of its thread,
 * until somebody changes it back.  Most coroutine libraries do the same.
 * FPSR (the sticky exception flags) is not saved either.
 */
#if defined(__aarch64__)
/* With -mbranch-protection=bti the linker marks pages guarded; an indirect
 * call (through the PLT, or a function pointer) must then land on a BTI
 * instruction.  The trampoline is only ever entered by `ret`, which BTI
 * does not check, so it needs none. */
#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define BTI_C bti c
#define GREENLET__FEATURE_BTI 1
#else
#define BTI_C
#define GREENLET__FEATURE_BTI 0
#endif
/* Nothing here signs or authenticates return addresses, so the file is
 * compatible with -mbranch-protection=pac-ret callers. */
#if defined(__ARM_FEATURE_PAC_DEFAULT) && __ARM_FEATURE_PAC_DEFAULT
#define GREENLET__FEATURE_PAC 2
#else
#define GREENLET__FEATURE_PAC 0
#endif
#endif

#if defined(__aarch64__) && !defined(GREENLET_CONTEXT_UCONTEXT)

	.text

/* int greenlet__context_jump(void **from_sp, void *to_sp, int status)
 * Returns `status` on the resumed side. */
	.globl	greenlet__context_jump
	.hidden	greenlet__context_jump
	.type	greenlet__context_jump, %function
	.p2align 4
greenlet__context_jump:
	.cfi_startproc
	BTI_C
	stp	x29, x30, [sp, #-160]!
	.cfi_def_cfa_offset 160
	.cfi_offset x29, -160
	.cfi_offset x30, -152
	stp	x19, x20, [sp, #16]
	.cfi_offset x19, -144
	.cfi_offset x20, -136
	stp	x21, x22, [sp, #32]
	.cfi_offset x21, -128
	.cfi_offset x22, -120
	stp	x23, x24, [sp, #48]
	.cfi_offset x23, -112
	.cfi_offset x24, -104
	stp	x25, x26, [sp, #64]
	.cfi_offset x25, -96
	.cfi_offset x26, -88
	stp	x27, x28, [sp, #80]
	.cfi_offset x27, -80
	.cfi_offset x28, -72
	stp	d8, d9, [sp, #96]
	.cfi_offset 72, -64	/* DWARF 64+n is v(n) */
	.cfi_offset 73, -56
	stp	d10, d11, [sp, #112]
	.cfi_offset 74, -48
	.cfi_offset 75, -40
	stp	d12, d13, [sp, #128]
	.cfi_offset 76, -32
	.cfi_offset 77, -24
	stp	d14, d15, [sp, #144]
	.cfi_offset 78, -16
	.cfi_offset 79, -8

	/* Both stacks hold the same layout, so the CFI above stays true. */
	mov	x9, sp
	str	x9, [x0]
	mov	sp, x1

	ldp	d14, d15, [sp, #144]
	.cfi_restore 78
	.cfi_restore 79
	ldp	d12, d13, [sp, #128]
	.cfi_restore 76
	.cfi_restore 77
	ldp	d10, d11, [sp, #112]
	.cfi_restore 74
	.cfi_restore 75
	ldp	d8, d9, [sp, #96]
	.cfi_restore 72
	.cfi_restore 73
	ldp	x27, x28, [sp, #80]
	.cfi_restore x27
	.cfi_restore x28
	ldp	x25, x26, [sp, #64]
	.cfi_restore x25
	.cfi_restore x26
	ldp	x23, x24, [sp, #48]
	.cfi_restore x23
	.cfi_restore x24
	ldp	x21, x22, [sp, #32]
	.cfi_restore x21
	.cfi_restore x22
	ldp	x19, x20, [sp, #16]
	.cfi_restore x19
	.cfi_restore x20
	ldp	x29, x30, [sp], #160
	.cfi_def_cfa_offset 0
	.cfi_restore x29
	.cfi_restore x30
	mov	w0, w2
	/* ret x30, not br x30: the return address belongs to another stack's
	 * call, so the return-stack predictor misses a switch either way, but
	 * `ret` is exempt from BTI checks, while `br x30` would fault on
	 * BTI-guarded pages (a call's return site is no landing pad), and ret
	 * keeps the predictor's stack balanced with the `bl` that got here. */
	ret	x30
	.cfi_endproc
	.size	greenlet__context_jump, .-greenlet__context_jump

/*
 * void *greenlet__context_init(void *top)
 * Builds a frame that greenlet__context_jump "returns" into the trampoline
 * with.  Layout from the 16-byte aligned top T: T-16..T zero (a fake outer
 * frame), then the 160-byte register frame at T-176, all zero except the
 * saved x30 = trampoline.  After the jump pops it, sp = T-16: 16-byte
 * aligned, as AAPCS64 requires at every instruction that uses sp.
 */
	.globl	greenlet__context_init
	.hidden	greenlet__context_init
	.type	greenlet__context_init, %function
	.p2align 4
greenlet__context_init:
	.cfi_startproc
	BTI_C
	and	x0, x0, #~15
	sub	x0, x0, #176
	adr	x1, greenlet__context_trampoline
	stp	xzr, x1, [x0, #0]	/* x29 = 0, x30 = trampoline */
	stp	xzr, xzr, [x0, #16]
	stp	xzr, xzr, [x0, #32]
	stp	xzr, xzr, [x0, #48]
	stp	xzr, xzr, [x0, #64]
	stp	xzr, xzr, [x0, #80]
	stp	xzr, xzr, [x0, #96]
	stp	xzr, xzr, [x0, #112]
	stp	xzr, xzr, [x0, #128]
	stp	xzr, xzr, [x0, #144]
	stp	xzr, xzr, [x0, #160]	/* fake outer frame */
	ret
	.cfi_endproc
	.size	greenlet__context_init, .-greenlet__context_init

/*
 * First code of every greenlet.  The return address is undefined here, so
 * debuggers and unwinders stop at this frame, and a C++ exception escaping
 * run() finds no handler and terminates instead of unwinding off the stack.
 */
	.type	greenlet__context_trampoline, %function
	.p2align 4
greenlet__context_trampoline:
	.cfi_startproc
	.cfi_undefined x30
	mov	x29, #0
	bl	greenlet__entry
	brk	#0
	.cfi_endproc
	.size	greenlet__context_trampoline, .-greenlet__context_trampoline

#endif /* __aarch64__ && !GREENLET_CONTEXT_UCONTEXT */

#if defined(__aarch64__) && (GREENLET__FEATURE_BTI || GREENLET__FEATURE_PAC)
/* Tell the linker this object is BTI/PAC compatible; one input without the
 * note turns the protection off for the whole output, so it is emitted even
 * when the ucontext build leaves this file empty. */
	.pushsection .note.gnu.property, "a"
	.p2align 3
	.long	4		/* name size */
	.long	16		/* descriptor size */
	.long	5		/* NT_GNU_PROPERTY_TYPE_0 */
	.asciz	"GNU"
	.long	0xc0000000	/* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
	.long	4		/* data size */
	.long	GREENLET__FEATURE_BTI | GREENLET__FEATURE_PAC
	.long	0		/* padding to 8 */
	.popsection
#endif
	.section .note.GNU-stack,"",@progbits
