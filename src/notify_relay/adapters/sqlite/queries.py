"""Every SQL statement of the SQLite adapters, named, in one place."""
# ruff: noqa: S608 - the f-strings splice constant column lists, never input

# outcome notices are messages of the relay's own, under ids with `~` (domain/callback.py):
# never the sender's to list, count or replay
NOT_A_NOTICE = "instr(message_id, '~') = 0"

MESSAGE_COLUMNS = (
    "m.seq, m.sender_id, m.message_id, m.status, m.fingerprint, m.created_at, m.updated_at, "
    "m.queued, m.version, m.doc"
)

INSERT_MESSAGE = """
INSERT INTO messages (sender_id, message_id, status, fingerprint, created_at, updated_at,
                      queued, version, doc, destination)
VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)
ON CONFLICT (sender_id, message_id) DO NOTHING
"""

INSERT_BODY = "INSERT INTO bodies (seq, body) VALUES (?, ?)"

GET_MESSAGE = f"""
SELECT {MESSAGE_COLUMNS}, b.body FROM messages m LEFT JOIN bodies b ON b.seq = m.seq
WHERE m.sender_id = ? AND m.message_id = ?
"""

GET_MESSAGE_WITHOUT_BODY = f"""
SELECT {MESSAGE_COLUMNS}, NULL FROM messages m WHERE m.sender_id = ? AND m.message_id = ?
"""

UPDATE_MESSAGE = """
UPDATE messages SET status = ?, updated_at = ?, queued = ?, version = version + 1, doc = ?
WHERE sender_id = ? AND message_id = ? AND version = ?
"""

# a claim's start (claim_started): over the version its read found of that very row, since
# a message deleted by retention and submitted again under its id restarts at version 1,
# while seq (AUTOINCREMENT) is never given twice
START_MESSAGE = UPDATE_MESSAGE.rstrip() + " AND seq = ?\n"

# one statement per shape, never `(:x IS NULL OR ...)`: such a form keeps SQLite from
# ordering by an index, and every page then sorts the sender's whole history
LIST_MESSAGES = f"""
SELECT {MESSAGE_COLUMNS}, NULL FROM messages m INDEXED BY messages_by_sender
WHERE m.sender_id = :sender AND m.seq < :before AND {NOT_A_NOTICE}
ORDER BY m.seq DESC LIMIT :limit
"""

LIST_MESSAGES_IN_STATUS = f"""
SELECT {MESSAGE_COLUMNS}, NULL FROM messages m INDEXED BY messages_by_sender_status
WHERE m.sender_id = :sender AND m.status = :status AND m.seq < :before AND {NOT_A_NOTICE}
ORDER BY m.seq DESC LIMIT :limit
"""

FAILED_BETWEEN = f"""
SELECT {MESSAGE_COLUMNS}, NULL FROM messages m INDEXED BY messages_by_sender_status_updated
WHERE m.sender_id = :sender AND m.status = 'FAILED'
  AND m.updated_at >= :since AND m.updated_at < :until
  AND (:destination IS NULL OR m.destination = :destination)
  AND {NOT_A_NOTICE}
ORDER BY m.updated_at LIMIT :limit
"""

# with each body's size (length() reads a BLOB's size, not its pages), which bounds a batch
EXPIRED_MESSAGES = """
SELECT m.seq, coalesce(length(b.body), 0)
FROM messages m INDEXED BY messages_final_by_updated LEFT JOIN bodies b ON b.seq = m.seq
WHERE (m.status = 'DELIVERED' OR m.status = 'FAILED' OR m.status = 'CANCELLED')
  AND m.updated_at < ?
ORDER BY m.updated_at LIMIT ?
"""

DELETE_MESSAGE = "DELETE FROM messages WHERE seq = ?"

DELETE_BODY = "DELETE FROM bodies WHERE seq = ?"

UNQUEUED_MESSAGES = f"""
SELECT {MESSAGE_COLUMNS}, b.body FROM messages m LEFT JOIN bodies b ON b.seq = m.seq
WHERE m.queued = 0 AND m.status = 'QUEUED' AND m.created_at < ?
ORDER BY m.created_at LIMIT ?
"""

ENQUEUE = """
INSERT INTO queue (sender_id, message_id, visible_at, receipt, destination)
VALUES (?, ?, ?, NULL, ?)
ON CONFLICT (sender_id, message_id) DO UPDATE SET visible_at = excluded.visible_at
WHERE queue.receipt IS NULL AND excluded.visible_at < queue.visible_at
"""

DUE_ENTRIES = """
SELECT rowid, sender_id, message_id, destination FROM queue WHERE visible_at <= ?
ORDER BY visible_at LIMIT ?
"""

# a claim that starts its attempts reads each entry's message in the same statement: one
# statement a claim, not one a message (the message's columns as GET_MESSAGE has them, after
# the entry's four, then the body's size, then what the claim counts of it: the body's and
# the document's size, since a message's headers, in its document, are bounded only by the
# request's 6 MiB; all NULL for an entry without a message). A body over INLINE_BODY_BYTES
# is left out (NULL) and read by BODY once the claim takes it: Python's sqlite3 steps to the
# next row before it hands over one, so a claim that its body bound stopped had read one
# body more than it took (6 MiB: 4 ms of the event loop)
INLINE_BODY_BYTES = 64 * 1024
DUE_MESSAGE_ROWS = f"""q.rowid, q.sender_id, q.message_id, q.destination, {MESSAGE_COLUMNS},
CASE WHEN length(b.body) <= {INLINE_BODY_BYTES} THEN b.body END, length(b.body),
coalesce(length(b.body), 0) + length(m.doc)
FROM queue q LEFT JOIN messages m ON m.sender_id = q.sender_id AND m.message_id = q.message_id
LEFT JOIN bodies b ON b.seq = m.seq
"""

BODY = "SELECT body FROM bodies WHERE seq = ?"

DUE_MESSAGES = f"""SELECT {DUE_MESSAGE_ROWS}
WHERE q.visible_at <= ? ORDER BY q.visible_at LIMIT ?
"""

DUE_MESSAGES_OF_DESTINATION = f"""SELECT {DUE_MESSAGE_ROWS}
WHERE q.sender_id = ? AND q.destination = ? AND q.visible_at <= ? ORDER BY q.visible_at LIMIT ?
"""

DUE_DESTINATIONS = """
SELECT sender_id, destination, entries FROM queue_destinations WHERE next_visible <= ?
"""

DUE_ENTRIES_OF_DESTINATION = """
SELECT rowid, sender_id, message_id, destination FROM queue
WHERE sender_id = ? AND destination = ? AND visible_at <= ? ORDER BY visible_at LIMIT ?
"""

DESTINATIONS_BY_NEXT_VISIBLE = """
SELECT sender_id, destination, next_visible FROM queue_destinations ORDER BY next_visible
"""

LEASE = "UPDATE queue SET visible_at = ?, receipt = ? WHERE rowid = ?"

# a claim that read its entries before its write (claim_started): the entry as read, and
# still due (a cancel deleted it, another claim leased it: not taken)
LEASE_IF_DUE = """
UPDATE queue SET visible_at = ?, receipt = ?
WHERE rowid = ? AND sender_id = ? AND message_id = ? AND visible_at <= ?
"""

COMPLETE = "DELETE FROM queue WHERE sender_id = ? AND message_id = ? AND receipt = ?"
DEQUEUE = "DELETE FROM queue WHERE sender_id = ? AND message_id = ?"

RESCHEDULE = """
UPDATE queue SET visible_at = ?, receipt = NULL
WHERE sender_id = ? AND message_id = ? AND receipt = ?
"""

NEXT_DUE = "SELECT min(visible_at) FROM queue"

RECOVER = "UPDATE queue SET visible_at = ?, receipt = NULL WHERE receipt IS NOT NULL"

# kept by the queue triggers: O(destinations), where count(*) would read every entry
DEPTH = "SELECT coalesce(sum(entries), 0) FROM queue_destinations"

ENSURE_DESTINATION = "INSERT OR IGNORE INTO destinations (sender_id, name) VALUES (?, ?)"

GET_DESTINATION = """
SELECT sender_id, name, version, doc FROM destinations WHERE sender_id = ? AND name = ?
"""

SAVE_DESTINATION = """
INSERT INTO destinations (sender_id, name, state, version, doc) VALUES (:sender, :name, :state,
    :expected + 1, :doc)
ON CONFLICT (sender_id, name) DO UPDATE SET
    state = excluded.state, version = excluded.version, doc = excluded.doc
WHERE destinations.version = :expected
"""

LIST_DESTINATIONS = """
SELECT sender_id, name, version, doc FROM destinations
WHERE sender_id = :sender AND name > :after ORDER BY name LIMIT :limit
"""

LIST_DESTINATIONS_IN_STATE = """
SELECT sender_id, name, version, doc FROM destinations INDEXED BY destinations_by_state
WHERE sender_id = :sender AND state = :state AND name > :after ORDER BY name LIMIT :limit
"""

ACTIVE_DESTINATIONS = "SELECT sender_id, name, version, doc FROM destinations WHERE doc IS NOT NULL"

PENDING = """
SELECT count(*) FROM messages INDEXED BY messages_pending_by_destination
WHERE sender_id = ? AND destination = ?
  AND (status = 'QUEUED' OR status = 'DELIVERING' OR status = 'RETRYING')
"""
