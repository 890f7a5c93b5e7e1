"""
Seeing and steering a running cluster: the master's control socket and the
C{twisted-cluster} command that talks to it (contract §5).
"""
