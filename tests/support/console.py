"""`recvault` run in-process against a test's instance, on the test's clock and password cost."""

from __future__ import annotations

from dataclasses import dataclass

from click.testing import CliRunner, Result

from tests.support.clock import SteppingClock
from vault.cli import Collaborators, main
from vault.services.passwords import Passwords
from vault.settings import Settings


@dataclass(frozen=True)
class Console:
    """The operator's console: each call runs one `recvault` command and returns its result."""

    settings: Settings
    clock: SteppingClock
    passwords: Passwords

    def environment(self) -> dict[str, str]:
        environment = {
            "VAULT_INSTANCE_DIR": str(self.settings.instance_dir),
            "VAULT_DATABASE_URL": self.settings.database_url,
            "VAULT_STORAGE_URL": self.settings.storage_url,
        }
        if self.settings.smtp_url:
            environment["VAULT_SMTP_URL"] = self.settings.smtp_url
        return environment

    def __call__(self, *args: str, stdin: str | None = None) -> Result:
        return CliRunner().invoke(
            main,
            list(args),
            input=stdin,
            env=self.environment(),
            obj=Collaborators(clock=self.clock, passwords=self.passwords),
        )
