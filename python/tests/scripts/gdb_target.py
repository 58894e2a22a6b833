"""Greenlets parked at known places, for the gdb extension's test
(python/tests/test_gdb.py).  Stops itself with SIGTRAP (gdb takes it), or
aborts with `abort` as argument (a kernel core).  The comments
`# PARK <name>` mark the lines the test expects in the Python backtraces."""
import os
import signal
import sys
import threading

from greenlet import getcurrent, greenlet

main = getcurrent()


def alpha_leaf(x):
    main.switch(x)  # PARK alpha_leaf


def alpha_mid(x):
    alpha_leaf(x + 1)  # PARK alpha_mid


def alpha_run():
    alpha_mid(1)  # PARK alpha_run


def beta_key(v):
    if v == 2:
        main.switch("beta")  # PARK beta_key
    return v


def beta_run():
    return sorted([3, 2, 1], key=beta_key)  # PARK beta_run


def delta_gen():
    main.switch("delta")  # PARK delta_gen
    yield 1


def delta_run():
    for _ in delta_gen():  # PARK delta_run
        pass


def gamma_run():
    worker_main.switch("gamma")  # PARK gamma_run


def worker():
    global worker_main, gamma
    worker_main = getcurrent()
    gamma = greenlet(gamma_run)
    gamma.switch()
    ready.set()
    done.wait()  # PARK worker


alpha = greenlet(alpha_run)
beta = greenlet(beta_run)
alpha.switch()
beta.switch()
delta = greenlet(delta_run)
delta.switch()
unstarted = greenlet(alpha_run)
finished = greenlet(lambda: None)
finished.switch()
ready, done = threading.Event(), threading.Event()
t = threading.Thread(target=worker, daemon=True)
t.start()
ready.wait()
print("IDS alpha=0x%x beta=0x%x" % (id(alpha), id(beta)), flush=True)


def stop():
    if sys.argv[1:] == ["abort"]:
        os.abort()  # PARK stop
    os.kill(os.getpid(), signal.SIGTRAP)  # PARK stop


stop()  # PARK main
done.set()
t.join()
