"""Putting export ticks on the django-q2 queue."""

from django_q.tasks import async_task


def enqueue_export(job_id) -> None:
    async_task(
        "exports.tasks.run_export", str(job_id), group="exports", task_name=f"export-{job_id}"[:100]
    )
