"""Capture: the request path. The ASGI and WSGI middlewares, the framework-neutral core that turns a finished
request into an event, route matching and the auth preset, who (identity) and from where (client IP), the
per-request context handlers enrich, and the glue for Django and Flask (``frameworks/``).

Users import the public names from ``audit_middleware``; these modules are the implementation.
"""
