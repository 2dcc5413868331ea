"""Putting export ticks and imports on the django-q2 queue."""

from django_q.tasks import async_task


def enqueue_export(job_id) -> None:
    async_task(
        "exports.tasks.run_export", str(job_id), group="exports", task_name=f"export-{job_id}"[:100]
    )


def enqueue_import(job_id) -> None:
    async_task(
        "exports.tasks.run_import", str(job_id), group="imports", task_name=f"import-{job_id}"[:100]
    )


def enqueue_callback(job_id) -> None:
    async_task("exports.tasks.deliver_callback", str(job_id), group="export-callbacks")
