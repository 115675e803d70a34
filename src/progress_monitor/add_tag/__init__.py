"""add_tag: coordinators register a class tag, through the staff web form or the Slack slash command.

registry.py validates and inserts (one path for both front ends); form.py is the web form, command.py the
`/turma` command (verb -> handler); identity.py verifies who is calling the form (IAP identity, CSRF tokens);
Slack's signatures are checked by progress_monitor.slack.signing; templates/ holds the form.
"""
