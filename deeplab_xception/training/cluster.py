"""Roles from TF_CONFIG, and the servers that worker and parameter-server processes run.

Every process of a job runs the same command; TF_CONFIG says which part it
plays: "chief" trains (coordinates, under the parameter-server strategy),
"worker" and "ps" serve, "evaluator" evaluates each new checkpoint. Without
TF_CONFIG the process is a single-process chief.
"""

import json
import os
import socket
import time

import tensorflow as tf

from deeplab_xception.errors import UserError

ROLES = ("chief", "worker", "ps", "evaluator")


def tf_config():
    """TF_CONFIG as a dict ({} when unset); a UserError naming the first bad field."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"TF_CONFIG: not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(config, dict):
        raise UserError('TF_CONFIG: expected {"cluster": {...}, "task": {"type": ..., "index": ...}}')
    jobs = config.get("cluster", {})
    if not isinstance(jobs, dict):
        raise UserError(f'TF_CONFIG: "cluster" must map job names to address lists, got {jobs!r}')
    for job, addresses in jobs.items():
        if not (isinstance(addresses, list) and all(
                isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses)):
            raise UserError(f'TF_CONFIG: "cluster"."{job}" must be a list of "host:port" strings, '
                            f"got {addresses!r}")
    task = config.get("task", {})
    if not isinstance(task, dict):
        raise UserError(f'TF_CONFIG: "task" must be {{"type": ..., "index": ...}}, got {task!r}')
    if jobs and not task:
        raise UserError('TF_CONFIG: a "cluster" but no "task": say which task this process is, '
                        '{"type": "chief"|"worker"|"ps"|"evaluator", "index": N}')
    if task:
        if task.get("type") not in ROLES:
            raise UserError(f'TF_CONFIG: "task"."type" {task.get("type")!r} is not one of '
                            f"{', '.join(ROLES)}")
        index = task.get("index", 0)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise UserError(f'TF_CONFIG: "task"."index" must be an integer >= 0, got {index!r}')
        if task["type"] != "evaluator" and index >= len(jobs.get(task["type"], [])):
            raise UserError(f'TF_CONFIG: "task": the cluster has no {task["type"]} task {index}')
    return config


def role():
    """(task type, task index) of this process; ("chief", 0) without TF_CONFIG."""
    task = tf_config().get("task", {})
    return task.get("type", "chief"), int(task.get("index", 0))


def is_chief():
    """The process that writes checkpoints and summaries (worker 0 when there is no chief)."""
    config = tf_config()
    task_type, index = role()
    has_chief = "chief" in config.get("cluster", {}) or not config
    return task_type == "chief" or (not has_chief and task_type == "worker" and index == 0)


def serve_forever():
    """Runs this process's worker or PS server until it is killed (parameter-server training)."""
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(
        resolver.cluster_spec(), job_name=resolver.task_type, task_index=resolver.task_id,
        protocol=resolver.rpc_layer or "grpc", start=True)
    server.join()


def silent_tasks(jobs=("ps", "worker"), wait_s=3.0):
    """["ps/0 at host:port", ...]: the tasks of those TF_CONFIG jobs that still refuse
    connections after `wait_s` seconds (TensorFlow waits for them without a word)."""
    cluster = tf_config().get("cluster", {})
    pending = [(f"{job}/{index} at {address}", address) for job in jobs
               for index, address in enumerate(cluster.get(job, []))]
    deadline = time.monotonic() + wait_s
    while pending:
        pending = [(name, address) for name, address in pending if not _answers(address)]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    return [name for name, _ in pending]


def _answers(address):
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
        return True
    except OSError:
        return False
