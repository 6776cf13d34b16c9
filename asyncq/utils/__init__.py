"""Small helpers under the import paths Celery gives them (``celery.utils.log``)."""
