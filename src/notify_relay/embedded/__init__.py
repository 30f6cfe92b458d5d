"""The embedded server's processes, on one SQLite file.

With `--processes 1` one process runs the API and the delivery worker. With 2 (the default
on a machine with two cores or more) the process that `serve` starts owns the file (its
lock, delivery, retention, destinations, metrics) and serves them on a Unix socket of its
own; it starts an API process that listens on the port, writes submissions, retries and
cancels to the file itself, wakes the owner through a pipe when it queues work, and
forwards what needs the owner's state. Either process dying loses nothing: a 202 is only
sent after its commit, and the owner restarts an API process that crashed.
"""
