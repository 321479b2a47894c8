"""Roles from TF_CONFIG, and the servers that worker and parameter-server processes run.

Every process of a job runs the same command; TF_CONFIG says which part it
plays: "chief" trains (coordinates, under the parameter-server strategy),
"worker" and "ps" serve, "evaluator" evaluates each new checkpoint. Without
TF_CONFIG the process is a single-process chief.
"""

import json
import os

import tensorflow as tf

from deeplab_xception.errors import UserError

ROLES = ("chief", "worker", "ps", "evaluator")


def tf_config():
    """TF_CONFIG as a dict ({} when unset); a UserError when it does not parse."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"TF_CONFIG: not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(config, dict) or not isinstance(config.get("task", {}), dict):
        raise UserError("TF_CONFIG: expected {\"cluster\": {...}, \"task\": {\"type\": ..., \"index\": ...}}")
    task = config.get("task", {})
    if task:
        if task.get("type") not in ROLES:
            raise UserError(f"TF_CONFIG: task type {task.get('type')!r} is not one of {', '.join(ROLES)}")
        jobs = config.get("cluster", {})
        if task["type"] != "evaluator" and task.get("index", 0) >= len(jobs.get(task["type"], [])):
            raise UserError(f"TF_CONFIG: the cluster has no {task['type']} task {task.get('index', 0)}")
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
