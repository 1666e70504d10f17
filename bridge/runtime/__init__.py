"""The running gateway: the pipeline, its tasks, source supervision, model runners."""
