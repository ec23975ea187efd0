"""What the tests share: real servers (sshd, nginx, a GitHub API stand-in), container engines,
the CNB lifecycle and pack, installers' wheelhouses, a non-root user, and the helpers more
than one test file uses (a hostile dependency, the installers' apps, builds held mid-way).
Imported as `from support import gitserver`; imports nothing from the test files (conftest
aside).
"""
