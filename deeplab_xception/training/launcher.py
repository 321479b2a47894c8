"""A whole cluster on this machine: every role as its own process on 127.0.0.1.

Each process runs the same command with its own TF_CONFIG, exactly as on a
real cluster; the launcher waits for the training processes and stops the
servers when they are done, on an error, or on Ctrl-C. When the chief reports
a lost parameter server (exit status `ClusterLost.EXIT_STATUS`) the whole
cluster restarts, as a job controller would, and resumes from the last
checkpoint.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

from deeplab_xception.errors import ArgumentError, ClusterLost

# Fewer inter-op threads than a PS cluster's concurrent RPCs need deadlocks
# small machines: TF sizes the pool from the core count.
MIN_INTEROP_THREADS = 4
CLUSTER_KEYS = ("workers", "ps", "evaluator")
TIMED_OUT = 124  # the exit status of timeout(1)


def parse_cluster(text):
    """'workers=2,ps=1[,evaluator=1]' to {'workers': 2, 'ps': 1, 'evaluator': 0}."""
    sizes = dict.fromkeys(CLUSTER_KEYS, 0)
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        if key not in CLUSTER_KEYS or not value.isdigit():
            raise ArgumentError("cluster", f"{item!r}: expected workers=N,ps=M[,evaluator=1]")
        sizes[key] = int(value)
    if sizes["workers"] < 1:
        raise ArgumentError("cluster", "needs workers=N with N >= 1")
    return sizes


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def cluster_layout(workers, ps):
    """{job: [addresses]}: chief + workers + PS tasks, or (ps=0) synchronous workers only."""
    jobs = {"chief": 1, "worker": workers, "ps": ps} if ps else {"worker": workers}
    ports = iter(_free_ports(sum(jobs.values())))
    return {job: [f"127.0.0.1:{next(ports)}" for _ in range(n)] for job, n in jobs.items() if n}


class LocalCluster:
    """Processes for every task of `layout` (plus evaluators), each running `command`."""

    def __init__(self, command, layout, evaluators=0, env=None):
        self.command = list(command)
        self.layout = layout
        self.env = dict(os.environ if env is None else env)
        threads = int(self.env.get("TF_NUM_INTEROP_THREADS", 0) or 0)
        self.env["TF_NUM_INTEROP_THREADS"] = str(max(threads, MIN_INTEROP_THREADS))
        self.tasks = [(job, i) for job in ("ps", "worker", "chief") for i in range(len(layout.get(job, ())))]
        self.tasks += [("evaluator", i) for i in range(evaluators)]
        self.processes = {}

    def start(self, task=None, **popen_kwargs):
        """Starts every task (or just `task`, e.g. to restart it)."""
        for job, index in [task] if task else self.tasks:
            env = dict(self.env, TF_CONFIG=json.dumps(
                {"cluster": self.layout, "task": {"type": job, "index": index}}))
            process = subprocess.Popen(self.command, env=env, **popen_kwargs)
            self.processes[job, index] = process
            address = self.layout[job][index] if job in self.layout else "no server"
            print(f"started {job}/{index} (pid {process.pid}, {address})", flush=True)
        return self

    def trainers(self):
        """The tasks that end by themselves: the chief, or every synchronous worker; evaluators."""
        done = [("chief", 0)] if "chief" in self.layout else [t for t in self.tasks if t[0] == "worker"]
        return done + [t for t in self.tasks if t[0] == "evaluator"]

    def wait(self, timeout=None):
        """Exit status of the job: the first failing trainer's, else 0; TIMED_OUT after
        `timeout` seconds, with a line naming the processes still running."""
        deadline = None if timeout is None else time.time() + timeout
        pending = self.trainers()
        while pending:
            for task in list(pending):
                code = self.processes[task].poll()
                if code:
                    return code
                if code == 0:
                    pending.remove(task)
                    if pending and all(job == "evaluator" for job, _ in pending):
                        print(f"training done; waiting for {self._names(pending)} to evaluate "
                              "the last checkpoint", flush=True)
            if pending and deadline is not None and time.time() > deadline:
                print(f"local cluster: timed out after {timeout:g} s waiting for "
                      f"{self._names(pending)}", file=sys.stderr, flush=True)
                return TIMED_OUT
            time.sleep(0.2)
        return 0

    def _names(self, tasks):
        return ", ".join(f"{job}/{index} (pid {self.processes[job, index].pid})"
                         for job, index in tasks)

    def stop(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def run(command, cluster, strategy, restarts=3, timeout=None):
    """Runs `command` as a local `cluster` ('workers=2,ps=1[,evaluator=1]') for `strategy`;
    returns the job's exit status.

    A lost parameter server restarts the whole cluster, at most `restarts`
    times; `timeout` (seconds) bounds each attempt.
    """
    sizes = parse_cluster(cluster)
    if strategy == "parameter_server" and sizes["ps"] < 1:
        raise ArgumentError("cluster", "the parameter_server strategy needs ps=M with M >= 1")
    if strategy == "multi_worker" and sizes["ps"]:
        raise ArgumentError("cluster", "the multi_worker strategy takes no ps")
    if strategy not in ("parameter_server", "multi_worker"):
        raise ArgumentError("cluster", f"needs strategy parameter_server or multi_worker, "
                        f"not {strategy}")
    for attempt in range(restarts + 1):
        with LocalCluster(command, cluster_layout(sizes["workers"], sizes["ps"]),
                          sizes["evaluator"]) as job:
            code = job.wait(timeout)
        if code != ClusterLost.EXIT_STATUS or attempt == restarts:
            return code
        print(f"restarting the cluster from its last checkpoint ({attempt + 1} of {restarts} "
              "restarts)", flush=True)
    return code
