"""`recvault year-end SCHOOL_YEAR --early` in a process that kills itself (SIGKILL: no
clean-up, no lock released by the program) right after the step named on the command line.

    python -m tests.support.year_end_killed 2025-2026 destroy_keys
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from vault import cli
from vault.services import year_end


def main() -> None:
    school_year, fatal_step = sys.argv[1], sys.argv[2]
    original = year_end.run

    def killed_after_the_step(*args: Any, **kwargs: Any) -> year_end.YearEndOutcome:
        def die(step: year_end.YearEndStep) -> None:
            if step.value == fatal_step:
                os.kill(os.getpid(), signal.SIGKILL)

        return original(*args, **kwargs, after_step=die)

    year_end.run = killed_after_the_step
    cli.main(["year-end", school_year, "--early"])


if __name__ == "__main__":
    main()
