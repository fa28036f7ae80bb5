"""PostgreSQL only: lock the chain and read its head in one round trip.

`accesslog_chain_head(lock_key, async_commit)` takes the transaction-level advisory lock, then
reads the newest row. It is VOLATILE PL/pgSQL, so the read takes a fresh snapshot after the lock
is granted (a single SQL statement would read with the snapshot taken before it waited, and
could see a stale head).
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION accesslog_chain_head(lock_key bigint, async_commit boolean)
RETURNS TABLE (head_seq bigint, head_hash varchar) AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    IF async_commit THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    RETURN QUERY SELECT e.seq, e.hash FROM accesslog_accessevent e ORDER BY e.seq DESC LIMIT 1;
END;
$$ LANGUAGE plpgsql VOLATILE;
"""

DROP = "DROP FUNCTION IF EXISTS accesslog_chain_head(bigint, boolean);"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("accesslog", "0003_roles")]

    operations = [migrations.RunPython(create, drop)]
