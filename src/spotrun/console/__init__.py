"""The web console at ``/console``: the SageMaker console's training-job pages for spotrun.

Server-rendered HTML (Jinja2 templates in ``templates/``) with a little JavaScript: htmx
for the parts that update live and Chart.js for the timeline and metric charts, both
vendored into ``static/vendor`` from the npm registry (``scripts/vendor_console.py``), so
the console needs no CDN and no internet. ``views`` has the routes, ``session`` the login
cookie and CSRF tokens, ``forms`` the create form and ``timeline`` the Gantt rows.
"""

from spotrun.console.views import mount

__all__ = ["mount"]
