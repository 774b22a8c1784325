"""The web app: kiosk screen, report, member history (docs/web.md). Pages read the result store and the
live capture stream, never the models; they are rendered here (Jinja2 templates, server-side SVG),
with no front-end build step and nothing fetched from a CDN."""
