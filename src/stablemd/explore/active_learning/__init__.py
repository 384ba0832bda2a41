"""Batch active learning with uncertainty-biased MD (docs/explore.md): the candidate pool from
biased replicas (``pool``), batch selection on the gradient features (``selection``), labels
from an oracle through Dask (``labelling``), the run's stage record (``record``), the
learning curve (``curve``) and the loop that ties them together and resumes (``loop``)."""
