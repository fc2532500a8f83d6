"""Store: the audit table and everything that reads it.

``schema/`` (numbered SQL applied by ``init-db``, tamper-evidence steps), ``digests.py`` and ``verify.py``
(the HMAC digest chain), ``query.py`` (filters and keyset pagination), ``export.py``, ``follow.py``,
``stats.py``, ``retention.py`` and ``partitions.py``.
"""
