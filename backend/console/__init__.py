"""The read-only query console behind POST /api/database/test.

lexers/ read a statement as each server does; checker.py refuses what is not
one read without side effects and rebuilds the statement from its tokens;
runner.py runs it on a connection of its own, under a deadline, streaming and
cutting the rows (results.py); guard.py says which guard is in force and
verifies DATABASE_READONLY_URL. The route and its audit policy are in
api/console.py.
"""
