"""A local Ray ends with its driver, however the driver ends. Ray ties its GCS and raylet to the driver,
but the raylet's DashboardAgent and RuntimeEnvAgent outlive a killed one (over a minute here: their
report of the raylet's death waits on the dead GCS). A small process outside Ray, started beside the
local cluster, waits on a pipe from the driver; when the pipe closes (the driver done, or killed), it
kills every process the cluster had started. Linux only (/proc); elsewhere there is no reaper."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# In the reaper: the processes to end come as "pid:start" words on one line (start: the process's start
# time in clock ticks, so that a pid used again by another process is left alone), then it waits for EOF.
_REAP = """
import os, signal, sys

def started(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])

wanted = [tuple(map(int, w.split(":"))) for w in sys.stdin.readline().split()]
sys.stdin.read()
for pid, start in wanted:
    try:
        if started(pid) == start:
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        pass
"""


def descendants() -> set[tuple[int, int]]:
    """(pid, start time) of every process below this one, from /proc (none without it)."""
    if not Path("/proc/self/stat").exists():
        return set()
    parents: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        parents.setdefault(int(fields[1]), []).append((int(entry), int(fields[19])))
    found, todo = set(), [os.getpid()]
    while todo:
        children = parents.get(todo.pop(), [])
        found.update(children)
        todo += [pid for pid, _ in children]
    return found


def start_reaper(spared: set[tuple[int, int]]) -> subprocess.Popen | None:
    """The reaper of the processes below this one but `spared` (those from before the local Ray was
    started: the caller's own), or None without /proc. `stop_reaper` ends it."""
    if not Path("/proc/self/stat").exists():
        return None
    doomed = " ".join(f"{pid}:{start}" for pid, start in descendants() - spared)
    # Its own session: a Ctrl-C to the command's process group leaves it to do its work.
    reaper = subprocess.Popen([sys.executable, "-c", _REAP], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True, text=True)
    reaper.stdin.write(doomed + "\n")
    reaper.stdin.flush()
    return reaper


def stop_reaper(reaper: subprocess.Popen | None) -> None:
    """After Ray's own shutdown: the reaper ends what is left (the agents), then itself."""
    if reaper is not None:
        reaper.stdin.close()
        reaper.wait()

