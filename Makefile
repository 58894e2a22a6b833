# cgreenlet - greenlets for C programs (and, later, CPython).
#
# The two commands a user needs:
#   make demo    build, then run the demonstration (examples/ at work)
#   make test    install missing Debian packages, then run every test
#
# Other targets: all (library), examples, tests, bench, install, clean.
# Variables:
#   CONTEXT=asm|ucontext   context switch back end (default: assembly)
#   SAN=asan|tsan          sanitizer build (ASan includes UBSan)
#   CROSS=aarch64-linux-gnu-   cross-compile prefix (also arm-linux-gnueabihf-,
#                          i686-linux-gnu-, powerpc64le-linux-gnu-,
#                          s390x-linux-gnu-, riscv64-linux-gnu-: see
#                          scripts/test-cross.sh, docs/platforms.md)
#   VALGRIND=1             Valgrind stack registration (default 1)
#   FPU_SAVE=0             skip saving the FP control word(s) in the switch
#                          (MXCSR/x87 CW, FPSCR, FPC, fcsr; docs/platforms.md)
#   BUILD=dir              output directory (default derived from the above)
#   PREFIX=/usr/local      install prefix

CROSS ?=
CC := $(if $(CROSS),$(CROSS)gcc,$(CC))
CXX := $(if $(CROSS),$(CROSS)g++,$(CXX))
AR := $(CROSS)ar
CONTEXT ?= asm
SAN ?=
VALGRIND ?= 1
FPU_SAVE ?= 1
PREFIX ?= /usr/local
GDB_AUTOLOAD_DIR ?= /usr/share/gdb/auto-load
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include

variant := $(if $(CROSS),$(patsubst %-,%,$(CROSS)),native)$(if $(SAN),-$(SAN))$(if $(filter ucontext,$(CONTEXT)),-ucontext)$(if $(filter 0,$(FPU_SAVE)),-nofpu)
BUILD ?= build/$(variant)

WARN := -Wall -Wextra -Werror
# `override` so that CFLAGS=... on the command line adds to these rather
# than dropping the flags the build depends on.
override CPPFLAGS += -Iinclude -Isrc
CFLAGS ?= -O2 -g
override CFLAGS += -std=c11 $(WARN) -fPIC -fvisibility=hidden -pthread
override LDFLAGS += -pthread

ifeq ($(CONTEXT),ucontext)
override CPPFLAGS += -DGREENLET_CONTEXT_UCONTEXT=1
endif
ifeq ($(VALGRIND),1)
ifneq ($(wildcard /usr/include/valgrind/valgrind.h),)
override CPPFLAGS += -DGREENLET_VALGRIND=1
endif
endif
ifeq ($(FPU_SAVE),0)
override CPPFLAGS += -DGREENLET_NO_FPU_SAVE=1
endif
ifeq ($(SAN),asan)
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
endif
ifeq ($(SAN),tsan)
SANFLAGS := -fsanitize=thread
endif
override CFLAGS += $(SANFLAGS)
override LDFLAGS += $(SANFLAGS)

LIB_SRCS := src/greenlet.c src/shared.c src/stack.c src/overflow.c src/fault.c
# Only the target ISA's switch: an empty object from the other .S would lack
# the target's GNU property note (BTI/PAC, CET) and turn it off for the .so.
# TARGET_CPU is the triplet's first word, named as the .S files are
# (i686 -> i386, powerpc64le -> ppc64le); docs/platforms.md lists the ISAs.
TARGET_CPU := $(firstword $(subst -, ,$(shell $(CC) -dumpmachine)))
TARGET_CPU := $(patsubst i%86,i386,$(patsubst powerpc64le,ppc64le,$(TARGET_CPU)))
ASM_SRCS := $(filter src/context_$(TARGET_CPU).S,$(wildcard src/context_*.S))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o) $(ASM_SRCS:%.S=$(BUILD)/%.o)
HDRS := include/cgreenlet.h $(wildcard src/*.h)

STATIC := $(BUILD)/libcgreenlet.a
SHARED := $(BUILD)/libcgreenlet.so
SONAME := libcgreenlet.so.0

EXAMPLES := $(patsubst examples/%.c,$(BUILD)/examples/%,$(wildcard examples/*.c))
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BIN := $(BUILD)/tests/cgreenlet-tests

.PHONY: bench-cross arm64-rootfs test-arm64-module test-arm64-module-full bench-arm64-module test-ports bench-ports bench-scale pagewalk fuzz fuzz-soak fuzz-merge gdb-greenlets stress bench-report difftest difftest-soak all lib examples tests check bench install uninstall clean demo test python test-python test-python-asan test-python-versions test-pypi pypi-env bench-python bench-gevent tsan-threads cxx-terminate gdb-target
all: lib
lib: $(STATIC) $(SHARED) $(BUILD)/cgreenlet.pc

$(BUILD)/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.S
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(filter-out -std=c11,$(CFLAGS)) -c $< -o $@

$(STATIC): $(LIB_OBJS)
	rm -f $@
	$(AR) rcs $@ $^

$(SHARED): $(LIB_OBJS)
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,-z,noexecstack $(LDFLAGS) -o $@ $^
	ln -sf libcgreenlet.so $(BUILD)/$(SONAME)

$(BUILD)/cgreenlet.pc: cgreenlet.pc.in Makefile
	@mkdir -p $(dir $@)
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@LIBDIR@|$(LIBDIR)|; s|@INCLUDEDIR@|$(INCLUDEDIR)|' $< > $@

examples: $(EXAMPLES)
$(BUILD)/examples/%: examples/%.c $(STATIC) include/cgreenlet.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $< -o $@ $(STATIC) $(LDFLAGS)

# The C test suite (Criterion).  Statically linked to the library so one
# binary exercises exactly this variant.  TEST_RUNNER=mini builds the same
# sources against tests/minicriterion instead, for ISAs where Debian has no
# Criterion (scripts/test-cross.sh).
TEST_RUNNER ?= criterion
ifeq ($(TEST_RUNNER),mini)
TEST_RUNNER_SRCS := tests/minicriterion/runner.c
TEST_RUNNER_FLAGS := -Itests/minicriterion
TEST_RUNNER_LIBS :=
else
TEST_RUNNER_SRCS :=
TEST_RUNNER_FLAGS :=
TEST_RUNNER_LIBS := -lcriterion
endif
tests: $(TEST_BIN)
$(TEST_BIN): $(TEST_SRCS) $(TEST_RUNNER_SRCS) $(wildcard tests/*.h tests/minicriterion/*/*.h) $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(TEST_RUNNER_FLAGS) $(CPPFLAGS) $(CFLAGS) -D_GNU_SOURCE $(TEST_SRCS) $(TEST_RUNNER_SRCS) -o $@ $(STATIC) $(LDFLAGS) $(TEST_RUNNER_LIBS) -lm

check: $(TEST_BIN)
	$(TEST_BIN)

install: lib
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	install -m 644 include/cgreenlet.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(SHARED) $(DESTDIR)$(LIBDIR)/libcgreenlet.so.0
	ln -sf libcgreenlet.so.0 $(DESTDIR)$(LIBDIR)/libcgreenlet.so
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@LIBDIR@|$(LIBDIR)|; s|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    cgreenlet.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/cgreenlet.pc
	install -D -m 644 gdb/cgreenlet-gdb.py \
	    $(DESTDIR)$(GDB_AUTOLOAD_DIR)$(LIBDIR)/libcgreenlet.so.0-gdb.py

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/cgreenlet.h $(DESTDIR)$(LIBDIR)/libcgreenlet.* \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/cgreenlet.pc \
	      $(DESTDIR)$(GDB_AUTOLOAD_DIR)$(LIBDIR)/libcgreenlet.so.0-gdb.py

# The drop-in greenlet module, built in-tree for one interpreter (default:
# Debian's, where its gevent and eventlet live) into build/python-X.Y.
PYTHON ?= /usr/bin/python3
PYVER = $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
python:
	$(PYTHON) setup.py -q build --build-base build/python-$(PYVER)-tmp \
	    --build-lib build/python-$(PYVER)
	@echo "greenlet module: build/python-$(PYVER)/greenlet"

test-python: python
	scripts/test-python.sh --python $(PYTHON)

# The module and the core built with ASan + UBSan into build/python-X.Y-asan;
# the upstream suite (leak checks off) and python/tests under the ASan
# runtime, less python/tests/{known,asan_known}_failures.txt (printed).
test-python-asan:
	scripts/test-python-asan.sh --python $(PYTHON)

# The module built and tested on every CPython found: Debian's python3 and
# ~/.pyenv/versions/3.9+ (versions not in scripts/python-versions-supported
# are reported, never fatal).
test-python-versions:
	scripts/test-python-versions.sh

# Today's PyPI packages, pinned (scripts/pypi-requirements.txt), in a venv per
# CPython 3.10+ on this module: greenlet 3.5.x's own suite (less
# python/tests/pypi_known_failures.txt), gevent 26, eventlet 0.41 and
# SQLAlchemy 2.1's asyncio ORM.  Wheels are cached in ~/.cache/cgreenlet-pypi
# (CGREENLET_PYPI_CACHE); pypi-env only makes the venvs.
test-pypi:
	scripts/test-pypi.sh
pypi-env:
	scripts/pypi-env.sh

bench:
	scripts/bench.sh

# The core's switch, create and park on each cross ISA under qemu-user, as
# ratios to Boost.Context built for that ISA (Debian's target .debs in
# ~/.cache/cgreenlet-debs, a sysroot in build/; not riscv64) and to the
# ucontext back end, on the same emulated CPU (docs/platforms.md).
# BENCH_CROSS_ARGS: e.g. --reps 11, or ISAs (aarch64 i386 arm ppc64le ...).
bench-cross:
	scripts/bench-cross.sh $(BENCH_CROSS_ARGS)

# The module on AArch64 (issue 13): built and tested in a Debian 12 arm64
# root file system (debootstrap, kept in ~/.cache/cgreenlet-rootfs or
# CGREENLET_ROOTFS_CACHE) under qemu-user.  test-arm64-module is the
# arm64module stage of `make test` (both upstream suites and a subset of
# python/tests); -full runs all of python/tests; bench-arm64-module times
# switches against Debian's arm64 greenlet 2.0.2 (under emulation only the
# ratio means anything).
arm64-rootfs:
	scripts/arm64-rootfs.sh path
test-arm64-module:
	scripts/test-arm64-module.sh
test-arm64-module-full:
	scripts/test-arm64-module.sh --full
bench-arm64-module:
	scripts/test-arm64-module.sh --bench

# The module on Debian 12's other release architectures (issue 13): armhf,
# i386, ppc64el and s390x, each built and tested in a root file system of
# its own (same cache) under qemu-user, i386 natively where the kernel runs
# it; PORTS="armhf s390x" picks some.  Not a stage of `make test` (too long
# for CI: docs/platforms.md has the times).  bench-ports times switches
# against Debian's greenlet 2.0.2 on each (only the ratio means anything).
test-ports:
	scripts/test-ports.sh $(PORTS)
bench-ports:
	scripts/test-ports.sh --bench $(PORTS)

# The Python module against stock greenlet, in the same run, same
# interpreter: Debian's 2.0.2 and PyPI's 3.5.6 (scripts/bench-env.sh unpacks
# its wheel into build/, fetched once into ~/.cache/cgreenlet-pypi).
bench-python: python
	scripts/deps.sh python
	$(PYTHON) bench/bench_python.py --python $(PYTHON) --build-dir build/python-$(PYVER)

# gevent servers on the Python module against stock greenlet, same run:
# pywsgi under wrk, and an echo server with 100 clients; Debian's gevent 22.10
# on stock 2.0.2 and on this module, and PyPI's gevent 26.9 (a venv,
# build/bench-venv-X.Y, made by scripts/bench-env.sh) on stock 3.5.6 and on
# this module.
bench-gevent: python
	scripts/deps.sh python
	$(PYTHON) bench/bench_gevent.py --python $(PYTHON) --build-dir build/python-$(PYVER)

# Greenlets at scale (issue 14), stock and this module in the same run:
# 100k-1M parked greenlets on Debian's python3 (RSS + page tables, gc.collect,
# the automatic collections, park, drop), a gevent echo server with 10k and
# 100k idle connections (fewer if RLIMIT_NOFILE cannot be raised: said so),
# and 1M parked C greenlets beside Boost.Context.
# SCALE_ARGS=--quick: small sizes, one round (under a minute).
SCALE_ARGS ?=
bench-scale: python lib
	scripts/deps.sh build bench python
	$(MAKE) --no-print-directory build/bench/scale_c build/bench/scale_boost
	$(PYTHON) bench/scale.py --python $(PYTHON) --build-dir build/python-$(PYVER) \
	    --c-dir build/bench $(SCALE_ARGS)
build/bench/scale_c: bench/scale_c.c include/cgreenlet.h $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 -Wall -Wextra -Werror -Iinclude $< -o $@ $(STATIC) -pthread
build/bench/scale_boost: bench/scale_boost.cpp
	@mkdir -p $(dir $@)
	$(CXX) -std=c++14 -O2 -DNDEBUG -Wall -Wextra -Werror $< -o $@ -l:libboost_context.a -pthread

# libFuzzer over the C core (clang, ASan + UBSan): the corpus plus a
# fixed-seed bounded run, or an open-ended soak adding to tests/fuzz/corpus
# (then fuzz-merge to minimise it).
FUZZ_SECONDS ?= 600
fuzz:
	scripts/fuzz.sh --bounded
fuzz-soak:
	scripts/fuzz.sh --soak $(FUZZ_SECONDS)
fuzz-merge:
	scripts/fuzz.sh --merge

# A machine check, no greenlet code: one page read in each of N mappings
# (bench/pagewalk.c says why; docs/python.md "Known gaps").
pagewalk: $(BUILD)/pagewalk
	$(BUILD)/pagewalk
$(BUILD)/pagewalk: bench/pagewalk.c
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -O2 -Wall -Wextra -Werror -o $@ $<

# The benchmark report: the C core against Boost.Context and the Python
# module against stock greenlet (Debian's 2.0.2 and PyPI's 3.5.6, gevent
# 22.10 and 26.9 servers too), tables and plots written to
# docs/benchmarks.md and docs/img/ (Debian's python3: its matplotlib).
bench-report:
	scripts/deps.sh build bench python
	/usr/bin/python3 bench/report.py

# Load (issue 5): a million parked greenlets and their cleanup, 32 threads
# churning greenlets and killing them across threads, a gevent server under
# wrk with its RSS sampled.  STRESS_ARGS=--quick: under 30 s; --impl both
# adds stock greenlet.
STRESS_ARGS ?=
stress: python
	scripts/deps.sh python
	$(PYTHON) bench/stress.py --python $(PYTHON) --build-dir build/python-$(PYVER) $(STRESS_ARGS)

# Differential testing against stock greenlet: Debian's 2.0.2 and PyPI's
# 3.5.6 (pinned; a venv under build/ from the PyPI cache, made on first
# use). A fixed-seed batch against both (python/tests runs it too), or an
# open-ended soak against DIFFTEST_REF (3.5.6 unless given; 2.0.2, or
# "all") writing shrunk reproducers of any divergence to build/difftest.
DIFFTEST_REF ?= all
difftest: python
	$(PYTHON) python/difftest/difftest.py batch --ref $(DIFFTEST_REF) --build-dir build/python-$(PYVER)
DIFFTEST_SECONDS ?= 600
DIFFTEST_SOAK_REF ?= 3.5.6
difftest-soak: python
	$(PYTHON) python/difftest/difftest.py soak --ref $(DIFFTEST_SOAK_REF) --seconds $(DIFFTEST_SECONDS) --build-dir build/python-$(PYVER)

demo:
	scripts/demo.sh

test:
	scripts/test.sh

clean:
	rm -rf build

# The thread scenarios as a plain program (ThreadSanitizer cannot host
# Criterion's runner).
tsan-threads: $(BUILD)/tests/tsan-threads $(BUILD)/tests/threads-standalone
$(BUILD)/tests/threads-standalone: tests/test_threads.c tests/standalone.h $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -D_GNU_SOURCE -DCGREENLET_TEST_STANDALONE $< -o $@ $(STATIC) $(LDFLAGS)
$(BUILD)/tests/tsan-threads: tests/tsan_threads.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $< -o $@ $(STATIC) $(LDFLAGS)

# A C++ exception escaping run() must call std::terminate.
cxx-terminate: $(BUILD)/tests/cxx-terminate
$(BUILD)/tests/cxx-terminate: tests/cxx_terminate.cpp $(STATIC)
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) -O2 -g -Wall -Wextra -Werror $(SANFLAGS) $< -o $@ $(STATIC) $(LDFLAGS)

# gdb extension check (tests/gdb_greenlets.sh): the target statically linked,
# and linked with the shared library for the auto-load case.
# The -no-pie build is for cores written by qemu-user (scripts/test-cross.sh),
# from which gdb cannot tell where a PIE was loaded.
gdb-greenlets: $(BUILD)/tests/gdb-greenlets-target $(BUILD)/tests/gdb-greenlets-target-shared $(BUILD)/tests/gdb-greenlets-target-nopie $(BUILD)/tests/gdb-shared-target
$(BUILD)/tests/gdb-greenlets-target: tests/gdb_greenlets_target.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -O1 -g -fno-omit-frame-pointer $< -o $@ $(STATIC) $(LDFLAGS)
$(BUILD)/tests/gdb-greenlets-target-shared: tests/gdb_greenlets_target.c $(SHARED)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -O1 -g -fno-omit-frame-pointer $< -o $@ $(SHARED) $(LDFLAGS)
$(BUILD)/tests/gdb-greenlets-target-nopie: tests/gdb_greenlets_target.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -O1 -g -fno-omit-frame-pointer -no-pie $< -o $@ $(STATIC) $(LDFLAGS)

# gdb extension on shared stacks (tests/gdb_shared.sh).
$(BUILD)/tests/gdb-shared-target: tests/gdb_shared_target.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -O1 -g -fno-omit-frame-pointer $< -o $@ $(STATIC) $(LDFLAGS)

# gdb backtrace check (tests/gdb_bt.sh).
gdb-target: $(BUILD)/tests/gdb-target
$(BUILD)/tests/gdb-target: tests/gdb_target.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -O1 -g -fno-omit-frame-pointer $< -o $@ $(STATIC) $(LDFLAGS)
