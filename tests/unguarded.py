"""Settings for tests of a server's own behaviour, not of who may call it (tests/security covers that): no token
is asked. Tests that start the whole platform keep the guard on and call with the platform's admin token."""

UNGUARDED = {"KNFLOW_SECURITY_OPEN": "true"}
