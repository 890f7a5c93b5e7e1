"""
How much one message may weigh: shared by the channel's two ends and by the
command line, which must not import AMP (and with it TLS) to read it.
"""

MAX_MESSAGE_SIZE = 32 * 1024 * 1024
"""The default largest message: twice what the contract promises, and small
enough that a worker sending an endless one holds the master under 100 MB."""


def boxLimit(maxMessage: int) -> int:
    """
    The most bytes one AMP box may hold on a channel whose messages are at
    most C{maxMessage} bytes: a batch is at most one such message and 64 KiB
    of smaller ones, split in 64 KiB values, each with its key and lengths.
    """
    return maxMessage + maxMessage // 1024 + 1024 * 1024
