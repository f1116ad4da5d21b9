"""Grading a class: the driver (``driver``, which alone writes the course folder), one
submission (``submission``), the distribution on Dask (``distribute``) and each worker's
fork server (``zygote``)."""
