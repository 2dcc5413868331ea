"""The job kernel export and import share: the lease, heartbeat, cancel, progress and finish
of a job, and its event trail."""
