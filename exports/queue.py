"""Putting export ticks on the django-q2 queue."""

from django_q.tasks import async_task


def enqueue_export(job_id) -> None:
    async_task(
        "exports.tasks.run_export", str(job_id), group="exports", task_name=f"export-{job_id}"[:100]
    )


def enqueue_callback(job_id) -> None:
    async_task("exports.tasks.deliver_callback", str(job_id), group="export-callbacks")
