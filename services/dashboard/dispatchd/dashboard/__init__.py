"""The web dashboard: a fourth deployable that reads and operates dispatchd over gRPC, like any client.

Invariant: it holds no database or Redis connection; every page is built from JobService
calls made with the browser user's own JWT (or none when security is off), so what a page
shows and what an action may do is decided by the control plane's role table, never here.
"""
