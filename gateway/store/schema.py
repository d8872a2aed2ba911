"""The store's SQL schema as numbered migrations; ``schema_version`` records the last one applied.

A migration is a list of statements run in one transaction, so a crash halfway leaves the file
at the previous version. Never edit a released migration: add the next one.
"""

from __future__ import annotations

from typing import Final

MIGRATIONS: Final[tuple[tuple[int, tuple[str, ...]], ...]] = (
    (
        1,
        (
            """CREATE TABLE meta (
                key TEXT PRIMARY KEY,
                value
            )""",
            """CREATE TABLE devices (
                dev_eui TEXT PRIMARY KEY CHECK (length(dev_eui) = 16),
                dev_addr TEXT UNIQUE CHECK (dev_addr IS NULL OR length(dev_addr) = 8),
                role TEXT NOT NULL,
                name TEXT,
                nwk_s_key BLOB,
                app_s_key BLOB,
                app_key BLOB,
                fcnt_up INTEGER NOT NULL DEFAULT -1,
                fcnt_down INTEGER NOT NULL DEFAULT 0,
                dev_class TEXT NOT NULL DEFAULT 'A' CHECK (dev_class IN ('A', 'C')),
                latitude REAL,
                longitude REAL,
                location TEXT,
                asset_id TEXT,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
            # seq is the send order; AUTOINCREMENT so a seq is never reused after deletes,
            # which keeps "after_seq" cursors and logs unambiguous.
            """CREATE TABLE records (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                rid TEXT NOT NULL UNIQUE,
                dev_eui TEXT NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('up', 'event', 'cmd-status', 'status')),
                priority INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL,
                body BLOB NOT NULL
            )""",
            # Retention walks routine records oldest first without touching the others.
            "CREATE INDEX records_by_priority_age ON records (priority, created_at)",
        ),
    ),
    (
        2,
        (
            # OTAA: the JoinEUI a join-request must carry, how DevNonces are checked
            # ('increasing': LoRaWAN 1.0.4 counter; 'unique': 1.0.2/1.0.3 random, never reused),
            # the last DevNonce accepted and the last JoinNonce sent (both never go back).
            """ALTER TABLE devices ADD COLUMN join_eui TEXT
                CHECK (join_eui IS NULL OR length(join_eui) = 16)""",
            """ALTER TABLE devices ADD COLUMN dev_nonce_mode TEXT NOT NULL DEFAULT 'increasing'
                CHECK (dev_nonce_mode IN ('increasing', 'unique'))""",
            "ALTER TABLE devices ADD COLUMN last_dev_nonce INTEGER NOT NULL DEFAULT -1",
            "ALTER TABLE devices ADD COLUMN join_nonce INTEGER NOT NULL DEFAULT 0",
            # The network side's MAC state of the session (RX windows, ADR, device status) as
            # JSON; never keys.
            "ALTER TABLE devices ADD COLUMN mac_state TEXT",
            # Every DevNonce a device in 'unique' mode has used (1.0.2/1.0.3 replay protection).
            """CREATE TABLE dev_nonces (
                dev_eui TEXT NOT NULL,
                dev_nonce INTEGER NOT NULL CHECK (dev_nonce BETWEEN 0 AND 65535),
                used_at REAL NOT NULL,
                PRIMARY KEY (dev_eui, dev_nonce)
            ) WITHOUT ROWID""",
        ),
    ),
    (
        3,
        (
            # One row per (command, device): a group command fans out into one row per member.
            # status follows the life published on cmd-status; status_n numbers its changes
            # (the n of the status record's rid). node_seq is the 8-bit seq sent on FPort 40.
            """CREATE TABLE commands (
                row_id INTEGER PRIMARY KEY AUTOINCREMENT,
                cmd_id TEXT NOT NULL,
                kid TEXT NOT NULL,
                key_name TEXT NOT NULL,
                dev_eui TEXT NOT NULL CHECK (length(dev_eui) = 16),
                grp TEXT,
                action TEXT NOT NULL,
                args TEXT NOT NULL,
                issued_at REAL NOT NULL,
                expires_at REAL NOT NULL,
                status TEXT NOT NULL CHECK (status IN
                    ('accepted', 'queued', 'sent', 'acked', 'failed', 'expired')),
                status_n INTEGER NOT NULL DEFAULT 0,
                reason TEXT,
                answer TEXT,
                node_seq INTEGER CHECK (node_seq IS NULL OR node_seq BETWEEN 0 AND 255),
                fcnt_down INTEGER,
                attempts INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL,
                UNIQUE (kid, cmd_id, dev_eui)
            )""",
            "CREATE INDEX commands_open ON commands (status, dev_eui)",
            # Replay protection: every (key, command id) seen, kept until it could no longer
            # be valid (its exp plus the allowed clock skew), even when it was rejected later.
            """CREATE TABLE command_ids (
                kid TEXT NOT NULL,
                cmd_id TEXT NOT NULL,
                keep_until REAL NOT NULL,
                PRIMARY KEY (kid, cmd_id)
            ) WITHOUT ROWID""",
            # The last calendar a lighting node accepted (JSON points), re-sent when it rejoins.
            """CREATE TABLE calendars (
                dev_eui TEXT PRIMARY KEY CHECK (length(dev_eui) = 16),
                points TEXT NOT NULL,
                cmd_id TEXT NOT NULL,
                updated_at REAL NOT NULL
            ) WITHOUT ROWID""",
            # Watering rules' memory per (rule, device): JSON state (daily totals, pauses,
            # recent moisture), so a restart neither forgets a pause nor waters twice a day.
            """CREATE TABLE rule_state (
                rule TEXT NOT NULL,
                dev_eui TEXT NOT NULL,
                state TEXT NOT NULL,
                updated_at REAL NOT NULL,
                PRIMARY KEY (rule, dev_eui)
            ) WITHOUT ROWID""",
        ),
    ),
)

LATEST_VERSION: Final = MIGRATIONS[-1][0]

# The columns of a stored record, in ``StoredRecord`` field order.
RECORD_COLUMNS: Final = "seq, rid, dev_eui, kind, priority, created_at, body"
