"""add_tag: coordinators register a class tag, through the staff web form or the Slack slash command.

registry.py validates and inserts (one path for both front ends); app.py holds the two HTTP handlers;
identity.py verifies who is calling (IAP identity, CSRF tokens, Slack signatures); templates/ the form.
"""
