#!/usr/bin/env python3
"""Runs a command with a wall-clock limit, keeping when each stderr line arrived.

usage: run-limited.py LIMIT_S OUT ERR STAMPS -- CMD...

stdout goes to OUT and stderr to ERR unchanged; STAMPS gets one line per stderr line,
"<seconds since start>\t<line>", so a caller can tell which phase a killed run was in and for
how long. Past LIMIT_S seconds (0: no limit) the command's process group is killed and this
exits 124 (as timeout(1) does) after writing "<seconds>\tKILLED" to STAMPS; otherwise it exits
with the command's status.
"""
import os
import signal
import subprocess
import sys
import threading
import time


def main() -> int:
    if len(sys.argv) < 7 or sys.argv[5] != "--":
        sys.exit(__doc__)
    limit, out, err, stamps = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    cmd = sys.argv[6:]
    start = time.monotonic()
    with open(out, "wb") as out_f, open(err, "wb") as err_f, open(stamps, "w") as stamp_f:
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=subprocess.PIPE, start_new_session=True)

        def copy_stderr() -> None:
            for line in proc.stderr:
                err_f.write(line)
                err_f.flush()
                text = line.decode(errors="replace").rstrip("\n")
                stamp_f.write(f"{time.monotonic() - start:.3f}\t{text}\n")
                stamp_f.flush()

        reader = threading.Thread(target=copy_stderr, daemon=True)
        reader.start()
        try:
            status = proc.wait(timeout=limit if limit > 0 else None)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            reader.join(timeout=5)
            stamp_f.write(f"{time.monotonic() - start:.3f}\tKILLED\n")
            return 124
        reader.join(timeout=5)
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main())
