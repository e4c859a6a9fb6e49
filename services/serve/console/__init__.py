"""The web console at /console: playground, adapters, jobs, review of rejected labels, metrics.

`web` holds the shell (templates, sign-in, error pages); each other module is one page.
"""
