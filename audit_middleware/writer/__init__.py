"""Writer: the bounded in-memory buffer and the background task that writes batches to PostgreSQL.

``writer.py`` (:class:`AuditWriter`), ``threaded.py`` (its threaded twin for WSGI), ``config.py``
(:class:`WriterConfig`), ``records.py`` (the event and its row), ``sink.py`` (:class:`PostgresSink`, one
binary COPY per batch), ``delivery.py``, ``spool.py`` and ``deadletter.py`` (what happens when the database
cannot take a row), ``metrics.py`` (optional Prometheus metrics).
"""
