"""The web console of SPEC §7 (``lapse web``): Starlette, Jinja2 templates, vendored htmx, SVG charts."""
