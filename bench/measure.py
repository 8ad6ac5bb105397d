"""Run a command and print its wall time and peak RSS as one JSON line on stderr's last line.

`bench/common.py` starts commands through this small launcher because Linux carries the peak RSS
of a process's memory image across exec: a command started directly from the large benchmark
driver would report the driver's memory as its own peak. The command started here is forked from
this small process instead, so its `ru_maxrss` is its own.
"""

import json
import os
import subprocess
import sys
import time

started = time.perf_counter()
process = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(process.pid, 0)
sys.stderr.write("\n" + json.dumps({
    "seconds": time.perf_counter() - started,
    "peak_rss_mb": usage.ru_maxrss / 1024,
    "returncode": os.waitstatus_to_exitcode(status),
}) + "\n")
