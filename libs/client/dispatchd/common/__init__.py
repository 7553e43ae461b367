"""What the client distribution's packages and the services share: the rule for job type (and
other) names, routing, log formatting and how a client presents credentials.

Invariant: nothing here imports gRPC (or anything of the server) at import time, so
`dispatchd-worker` can configure gRPC through the environment before it is loaded.
"""
