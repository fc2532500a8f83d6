"""Framework glue: hands a framework's user, matched route and auth events to the audit middleware.

``django.py`` holds :class:`DjangoAuditMiddleware`, ``flask.py`` holds :func:`install_flask`; both are
re-exported by ``audit_middleware``.
"""
