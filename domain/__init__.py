"""Business functions on an explicit psycopg connection, plus the ports to other systems.

Domain functions take ``conn`` first and ``now`` as a keyword; they never
connect, commit, roll back, sleep or read the clock.
"""
