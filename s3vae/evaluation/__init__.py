"""Evaluation: judge classifiers (``judge``), Appendix C metrics (``metrics``), speaker verification
(``verification``)."""
