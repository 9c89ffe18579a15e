"""End-to-end tests: real ``optmsg`` processes on a free port, driven over HTTP and the CLI."""
