"""Tasks as types: classification and detection implement one interface (``base.Task``) and
sit in one registry.  Training (``pipeline/train.py``) and the workflow dispatch on
``task_for(config)`` once; what differs between the tasks is found here."""
from __future__ import annotations

from .base import Task
from .classify import ClassifyTask
from .detect import DetectionTask

__all__ = ["TASKS", "ClassifyTask", "DetectionTask", "Task", "task_for"]

TASKS: dict[str, Task] = {"classify": ClassifyTask(), "detection": DetectionTask()}


def task_for(config_or_name) -> Task:
    """The task of a ``TrainConfig`` (its ``task`` field) or of a task name."""
    name = getattr(config_or_name, "task", config_or_name)
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None
