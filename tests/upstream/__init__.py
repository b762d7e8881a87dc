"""Other projects' ASGI middleware tests, run against ``otel_bridge.asgi.SentryAsgiMiddleware``.

Their code is never part of this repository: ``fetch`` takes the test files from the sdists of the installed
versions at test time; the conftests and shims here are this project's own.
"""
