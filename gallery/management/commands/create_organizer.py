from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gallery import services


class Command(BaseCommand):
    help = (
        "Create an organizer: a staff user who sees and manages only the events they own. "
        "Prints a one-time link to choose a password, or sets the one given on standard input."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("email")
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from the first line of standard input instead of printing a link.",
        )

    def handle(self, *args: object, username: str, email: str, password_stdin: bool, **options: object) -> None:
        password = None
        if password_stdin:
            # Never an argument: it would be visible to every user of the machine in `ps`.
            password = sys.stdin.readline().rstrip("\r\n")
            if not password:
                raise CommandError("No password on standard input.")
        try:
            user = services.organizer_create(username=username, email=email, password=password)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Created organizer {user.get_username()!r}."))
        if password is None:
            self.stdout.write("Send them this link to choose a password (it works once):")
            self.stdout.write(services.organizer_login_link(user=user))
        else:
            self.stdout.write("Their password is the one given on standard input.")
        self.stdout.write(f"Give them an event: manage.py create_event NAME --owner {user.get_username()}")
