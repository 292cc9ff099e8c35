"""The durable job queue and everything that runs it, one owner per concern.

- :mod:`~imagegen.server.jobs.model`: what a job is (status, request record), shared by the API and the workers;
- :mod:`~imagegen.server.jobs.store`: the SQLite store both sides share;
- :mod:`~imagegen.server.jobs.queue`: submit, read, cancel, wait for and follow jobs (the API side);
- :mod:`~imagegen.server.jobs.supervisor`: the worker processes, restarted when they die;
- :mod:`~imagegen.server.jobs.worker`: one worker process, which owns an engine and runs jobs;
- :mod:`~imagegen.server.jobs.retention`: deletes finished jobs and their files after the retention period;
- :mod:`~imagegen.server.jobs.urls`: signs the image URLs handed out.
"""
