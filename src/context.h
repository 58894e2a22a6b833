/*
 * context.h - the machine context switch, one implementation per ISA.
 *
 * A context is what a suspended greenlet leaves behind.  With the assembly
 * back ends (context_<isa>.S: x86_64, aarch64, i386, arm, ppc64le, s390x,
 * riscv64; docs/platforms.md) it is a single stack
 * pointer: the callee-saved registers are pushed on the suspended stack
 * itself, so a switch touches only the two stacks involved.  The portable
 * fallback (CONTEXT=ucontext at build time) uses getcontext/swapcontext; it
 * is slow (a sigprocmask system call per switch) but works on any ISA.
 *
 * A switch carries one int (the outcome status) to the resumed side, where
 * greenlet__context_swap() returns it; values are stored by the switching
 * side straight into the resumed side's out pointer (see greenlet.c).
 */
#ifndef GREENLET_CONTEXT_H
#define GREENLET_CONTEXT_H

#include <stddef.h>

/* The ISAs with an assembly switch (src/context_<isa>.S; docs/platforms.md
 * says how to add one); anything else falls back to ucontext. */
#if !defined(GREENLET_CONTEXT_UCONTEXT) && !defined(__x86_64__) &&            \
    !defined(__aarch64__) && !defined(__i386__) &&                            \
    !(defined(__arm__) && defined(__ARM_PCS_VFP)) &&                          \
    !(defined(__powerpc64__) && defined(_CALL_ELF) && _CALL_ELF == 2) &&      \
    !(defined(__s390x__)) &&                                                  \
    !(defined(__riscv) && __riscv_xlen == 64 && defined(__riscv_float_abi_double))
#define GREENLET_CONTEXT_UCONTEXT 1
#endif

/* Entry of every new greenlet; defined in greenlet.c, never returns. */
__attribute__((visibility("hidden"), noreturn)) void greenlet__entry(void);

#ifdef GREENLET_CONTEXT_UCONTEXT
#include <ucontext.h>

typedef struct greenlet__context {
  ucontext_t uc;
} greenlet__context;

static inline int greenlet__context_make(greenlet__context *ctx, void *lo,
                                         size_t size) {
  if (getcontext(&ctx->uc) != 0)
    return -1;
  ctx->uc.uc_stack.ss_sp = lo;
  ctx->uc.uc_stack.ss_size = size;
  ctx->uc.uc_link = NULL;
  makecontext(&ctx->uc, greenlet__entry, 0);
  return 0;
}

/* The outcome travels through a thread-local slot: swapcontext has none. */
extern __thread int greenlet__context_status;

static inline int greenlet__context_swap(greenlet__context *from,
                                         greenlet__context *to, int status) {
  greenlet__context_status = status;
  swapcontext(&from->uc, &to->uc);
  return greenlet__context_status;
}

static inline void *greenlet__context_sp(const greenlet__context *ctx) {
#if defined(__x86_64__)
  return (void *)ctx->uc.uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
  return (void *)ctx->uc.uc_mcontext.sp;
#elif defined(__i386__)
  return (void *)ctx->uc.uc_mcontext.gregs[REG_ESP];
#elif defined(__arm__)
  return (void *)ctx->uc.uc_mcontext.arm_sp;
#elif defined(__powerpc64__)
  return (void *)ctx->uc.uc_mcontext.gp_regs[1];
#elif defined(__s390x__)
  return (void *)ctx->uc.uc_mcontext.gregs[15];
#elif defined(__riscv)
  return (void *)ctx->uc.uc_mcontext.__gregs[2];
#else
  (void)ctx;
  return NULL;
#endif
}

#define GREENLET_CONTEXT_NAME "ucontext"
#else

typedef struct greenlet__context {
  void *sp;
} greenlet__context;

/* Assembly: build the initial frame below top (16-byte aligned) so that the
 * first swap into it enters greenlet__entry; returns the initial sp. */
__attribute__((visibility("hidden"))) void *greenlet__context_init(void *top);
/* Assembly: save callee-saved state on the current stack, store the stack
 * pointer in *from_sp, load to_sp and resume there, where the pending call
 * returns `status`. */
__attribute__((visibility("hidden"))) int
greenlet__context_jump(void **from_sp, void *to_sp, int status);

static inline int greenlet__context_make(greenlet__context *ctx, void *lo,
                                         size_t size) {
  ctx->sp = greenlet__context_init((char *)lo + size);
  return 0;
}

static inline int greenlet__context_swap(greenlet__context *from,
                                         greenlet__context *to, int status) {
  return greenlet__context_jump(&from->sp, to->sp, status);
}

static inline void *greenlet__context_sp(const greenlet__context *ctx) {
  return ctx->sp;
}

#if defined(__x86_64__)
#define GREENLET_CONTEXT_NAME "x86_64-sysv"
#elif defined(__aarch64__)
#define GREENLET_CONTEXT_NAME "aarch64-aapcs64"
#elif defined(__i386__)
#define GREENLET_CONTEXT_NAME "i386-sysv"
#elif defined(__arm__)
#define GREENLET_CONTEXT_NAME "arm-aapcs-vfp"
#elif defined(__powerpc64__)
#define GREENLET_CONTEXT_NAME "ppc64le-elfv2"
#elif defined(__s390x__)
#define GREENLET_CONTEXT_NAME "s390x-elf"
#else
#define GREENLET_CONTEXT_NAME "riscv64-lp64d"
#endif
#endif

#endif /* GREENLET_CONTEXT_H */
