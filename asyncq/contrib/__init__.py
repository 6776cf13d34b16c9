"""Extras that build on asyncq, as in Celery: ``asyncq.contrib.pytest``."""
