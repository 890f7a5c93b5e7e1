"""
The C{cluster} subcommand of C{twistd} and C{twist}.
"""

from twisted.application.service import ServiceMaker

clusterServiceMaker = ServiceMaker(
    "twisted-cluster",
    "twisted_cluster.tap",
    "Run a Twisted app on several worker processes that share its ports.",
    "cluster",
)
