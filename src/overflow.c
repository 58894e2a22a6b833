/*
 * overflow.c - reporting a stack overflow that hit a guard page.
 *
 * A greenlet that overruns its stack faults in the guard region below it.
 * The SIGSEGV handler runs on an alternate signal stack (the faulting stack
 * is unusable), checks whether the fault address lies in the current
 * greenlet's guard, and if so prints which greenlet overflowed and aborts.
 * Any other fault is passed to the handler that was installed before ours,
 * or re-raised with the default action.  Only async-signal-safe calls here.
 */
#define _GNU_SOURCE
#include "fault.h"
#include "internal.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ALTSTACK_SIZE ((size_t)64 * 1024)

static struct sigaction previous;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;

static size_t put_str(char *buf, size_t at, size_t cap, const char *s) {
  while (*s && at + 1 < cap)
    buf[at++] = *s++;
  return at;
}

static size_t put_num(char *buf, size_t at, size_t cap, unsigned long long v,
                      unsigned base) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v);
  if (base == 16)
    at = put_str(buf, at, cap, "0x");
  while (n > 0 && at + 1 < cap)
    buf[at++] = tmp[--n];
  return at;
}

static void on_segv(int sig, siginfo_t *info, void *uctx) {
  greenlet__tstate *ts = greenlet__tls;
  greenlet_t *g = ts ? ts->current : NULL;
  char *addr = info ? (char *)info->si_addr : NULL;
  if (g && g->stack.base && addr >= g->stack.base && addr < g->stack.lo) {
    char msg[256];
    size_t n = put_str(msg, 0, sizeof msg, "cgreenlet: stack overflow in greenlet #");
    n = put_num(msg, n, sizeof msg, g->id, 10);
    if (g->name[0]) {
      n = put_str(msg, n, sizeof msg, " '");
      n = put_str(msg, n, sizeof msg, g->name);
      n = put_str(msg, n, sizeof msg, "'");
    }
    n = put_str(msg, n, sizeof msg, " (stack ");
    n = put_num(msg, n, sizeof msg, (uintptr_t)g->stack.lo, 16);
    n = put_str(msg, n, sizeof msg, "-");
    n = put_num(msg, n, sizeof msg, (uintptr_t)(g->stack.lo + g->stack.size), 16);
    n = put_str(msg, n, sizeof msg, ", ");
    n = put_num(msg, n, sizeof msg, g->stack.size, 10);
    n = put_str(msg, n, sizeof msg, " bytes; fault at ");
    n = put_num(msg, n, sizeof msg, (uintptr_t)addr, 16);
    n = put_str(msg, n, sizeof msg, " in the guard page)\n");
    ssize_t w = write(STDERR_FILENO, msg, n);
    (void)w;
    abort();
  }
  /* Not ours: hand it on. */
  if ((previous.sa_flags & SA_SIGINFO) && previous.sa_sigaction) {
    previous.sa_sigaction(sig, info, uctx);
    return;
  }
  if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN &&
      previous.sa_handler != NULL) {
    previous.sa_handler(sig);
    return;
  }
  /* A SIGSEGV sent with kill()/raise() (si_code <= 0) is not a fault that
   * repeats on return: honour an ignoring disposition, else re-raise it. */
  int sent = info && info->si_code <= 0;
  if (previous.sa_handler == SIG_IGN && sent)
    return;
  /* Default action: restore it; a fault repeats when we return. */
  signal(sig, SIG_DFL);
  if (sent)
    raise(sig);
}

static void install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &previous);
}

void *greenlet__overflow_setup(void) {
  pthread_once(&install_once, install);
  stack_t cur;
  if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
    return NULL; /* the thread has one already (e.g. Python's faulthandler) */
  void *mem = greenlet__fault_hit()
                  ? MAP_FAILED
                  : mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED)
    return NULL;
  stack_t ss = {.ss_sp = mem, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
  if (sigaltstack(&ss, NULL) != 0) {
    munmap(mem, ALTSTACK_SIZE);
    return NULL;
  }
  return mem;
}

void greenlet__altstack_free(void *alt) {
  if (!alt)
    return;
  stack_t cur;
  if (sigaltstack(NULL, &cur) == 0 && cur.ss_sp == alt) {
    stack_t off = {.ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE};
    sigaltstack(&off, NULL);
  }
  munmap(alt, ALTSTACK_SIZE);
}
