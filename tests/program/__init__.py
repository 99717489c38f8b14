"""Program tests: ``__main__.py`` under the mock engine (a package, so its conftest has its own name)."""
