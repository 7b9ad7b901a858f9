"""``python -m spotrun.agent``: run this instance's agent with the process environment."""

import os
import sys

from spotrun.agent.main import run_agent

if __name__ == "__main__":
    sys.exit(run_agent(os.environ))
