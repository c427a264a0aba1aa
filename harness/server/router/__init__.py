"""The Zenoh router of `transport.router`: `python -m harness.server.router` (see its
`__main__`)."""
