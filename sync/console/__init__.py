"""[core] The admin console of a node: HTTPS pages and ``/metrics`` (see :mod:`.server`).

:mod:`.pages` and :mod:`.timeline` are the pure part (what each page shows),
:mod:`.server` the aiohttp listener with its mutual TLS and headers; ``templates/`` and
``static/`` hold the Jinja2 templates and the stylesheet.
"""
