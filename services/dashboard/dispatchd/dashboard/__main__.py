"""`python -m dispatchd.dashboard`: see dispatchd.dashboard.main."""

from dispatchd.dashboard.main import main

main()
