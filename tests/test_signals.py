"""The stop-signal handlers in rtseg.signals, exercised in a child interpreter (they are process-wide)."""
import os
import subprocess
import sys
import textwrap

import pytest

# A signal that lands inside a weakref callback (the import system uses them for its module
# locks) raises where Python cannot propagate: it must not print a traceback, and the next
# checkpoint must still end the command.
CHILD = textwrap.dedent("""
    import signal, sys, weakref
    from rtseg import signals
    signals.install()

    class Thing:
        pass

    def callback(_ref):
        signals._handle(signal.SIGTERM, None)   # as if SIGTERM arrived inside the callback

    thing = Thing()
    ref = weakref.ref(thing, callback)
    del thing                                   # runs the callback; its exception is unraisable
    print("went on", flush=True)
    try:
        signals.check()
    except signals.StopRequested as e:
        sys.exit(e.exit_code)
    sys.exit(0)
""")


def test_a_signal_inside_an_unraisable_context_is_quiet_and_still_ends_at_the_checkpoint():
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "went on"
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert proc.returncode == 143


OTHER = textwrap.dedent("""
    import weakref
    from rtseg import signals
    signals.install()

    class Thing:
        pass

    def callback(_ref):
        raise ValueError("not a signal")

    thing = Thing()
    ref = weakref.ref(thing, callback)
    del thing
""")


def test_other_unraisable_errors_are_still_reported():
    proc = subprocess.run([sys.executable, "-c", OTHER], capture_output=True, text=True, timeout=60)
    assert "ValueError: not a signal" in proc.stderr


# A process forked from rtseg (OpenVINO's telemetry sender is one) inherits the handlers, and
# Ctrl+C or a group-wide SIGTERM reaches it too: it must end quietly, not print a traceback.
FORKED = textwrap.dedent("""
    import os, signal, sys, time
    from rtseg import signals
    signals.install()
    pid = os.fork()
    if pid == 0:
        time.sleep(30)          # a library's helper process, busy
        os._exit(0)
    time.sleep(0.5)
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
""")


def test_a_forked_child_ends_quietly_on_a_stop_signal():
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    proc = subprocess.run([sys.executable, "-c", FORKED], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "143"
    assert "Traceback" not in proc.stderr and "StopRequested" not in proc.stderr, proc.stderr
