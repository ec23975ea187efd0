"""One module per platform (Heroku compile, Heroku app hooks, CNB, Docker/CI, local): the only
code that knows ENV_DIR, CNB_* or exit code 100. Each imports build (the cycle) and the
packages below; platforms never import each other, except apphooks -> heroku (both Heroku).
"""
