"""Run a Python module as __main__ and write its peak RSS (VmHWM, in KiB) to $PEAK_RSS_FILE at exit.

VmHWM belongs to the process's own address space after exec, so unlike ru_maxrss it does not
inherit the high-water mark of a large parent that forked it.
"""

import atexit
import os
import runpy
import sys


def _record() -> None:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                with open(os.environ["PEAK_RSS_FILE"], "w") as out:
                    out.write(line.split()[1])


atexit.register(_record)
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
