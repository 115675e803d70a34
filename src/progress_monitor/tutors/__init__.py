"""Tutors in Slack: the Monday digest per class channel, the buttons under it, and `/turma alunos`."""
