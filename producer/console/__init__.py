"""The web console at ``/console``: submit, watch and fix jobs in a browser, served by ``image-api`` itself.

Server-rendered pages (Jinja2, escaped everywhere) with a little progressive JavaScript, every asset served from
here under a strict Content-Security-Policy, behind the same API keys as the API.
"""
