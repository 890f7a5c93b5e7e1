from ..heap import holdCollection

holdCollection()

from .bootstrap import main  # noqa: E402

main()
