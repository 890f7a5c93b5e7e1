"""
twisted-cluster: run a Twisted app on every core.

A master process binds every address the app listens on and passes the
sockets to worker processes over a channel each; it supervises the workers.
C{from twisted_cluster import cluster} gives Node's cluster API.
"""

__version__ = "0.1.0"
