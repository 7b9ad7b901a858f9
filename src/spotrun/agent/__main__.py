"""``python -m spotrun.agent``: run this instance's agent with the process environment.

Once the agent has made its last report it leaves without tearing the interpreter down
(``spotrun.toolkit.rank.leave``: threads joined, ``atexit`` hooks run, output flushed).
Finalizing the modules it imported costs about a second of CPU, and an instance whose
attempt is over but that nobody terminates (the service is down) runs, and is billed,
until its agent has exited.
"""

import os

from spotrun.agent.main import run_agent
from spotrun.toolkit.rank import leave

if __name__ == "__main__":
    leave(run_agent(os.environ))
