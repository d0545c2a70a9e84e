"""The `continuum` command and the suite launcher it (and the end-to-end tests) use."""
