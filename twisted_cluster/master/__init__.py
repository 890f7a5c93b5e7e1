"""
What runs in the master process: the workers' processes and channels, the
shared sockets, and the supervision that keeps the workers running.
"""
